//! What the configuration writes into the document: the parameters that name configured
//! things become their enums or patterns, each sink and each view gets a path of its own (its
//! body, key and row are its own), and an operation with nothing configured behind it is left
//! out (it could only answer 404).
//!
//! - Namespaces: `namespace` is an enum of the configured ones; likes (`members/me`) list the
//!   `distinct` ones, increments the `sum` ones.
//! - Sinks: `/v1/writes/{sink}` becomes `/v1/writes/<sink>` for each, its body built from
//!   the columns ([`schemas::sink_write`]), with a link from the 202 to reading the write.
//! - Views: `/v1/views/{view}/{key}` becomes `/v1/views/<view>/{key}`, the key of its type,
//!   the answer of its shape, the security of its read rule.
//! - Waiting rooms: `queue` is a pattern of the configured ones; the 201 of a join links to
//!   polling and leaving with the token.
//! - Templates: no source key under the copy prefix.

use spillway_core::{
    config::{ReadRule, Settings},
    counters::config::{CounterKind, NamespaceSettings},
    sinks::SinkSettings,
    views::config::{ResultShape, ViewSettings},
};
use utoipa::openapi::{
    ArrayBuilder, ContentBuilder, Object, ObjectBuilder, OpenApi, PathItem, Ref, RefOr, Required,
    Schema, Type,
    link::LinkBuilder,
    path::{Operation, Parameter},
    request_body::RequestBodyBuilder,
    security::SecurityRequirement,
};

use super::schemas;

const COUNTERS: &str = "/v1/counters/{namespace}";
const COUNTER: &str = "/v1/counters/{namespace}/{entity_id}";
const MEMBERS: &str = "/v1/counters/{namespace}/{entity_id}/members/me";
const INCREMENTS: &str = "/v1/counters/{namespace}/{entity_id}/increments";
const WRITES: &str = "/v1/writes/{sink}";
const WRITE: &str = "/v1/writes/{sink}/{id}";
const VIEW: &str = "/v1/views/{view}/{key}";
const QUEUE_TOKENS: &str = "/v1/queues/{queue}/tokens";
const QUEUE_TOKEN: &str = "/v1/queues/{queue}/tokens/{token}";

/// Writes the configuration into the document.
pub fn apply(document: &mut OpenApi, settings: &Settings) {
    parameter_rules(document);
    namespaces(document, settings);
    sinks(document, settings);
    views(document, settings);
    queues(document, settings);
    templates(document, settings);
}

/// Every parameter named for a rule gets the rule's schema (utoipa's `schema_with` on a
/// parameter would drop its description and whether it is required).
fn parameter_rules(document: &mut OpenApi) {
    type Rule = (&'static str, fn() -> Object);
    let rules: [Rule; 8] = [
        ("namespace", schemas::namespace),
        ("entity_id", schemas::entity_id),
        ("ids", schemas::entity_ids),
        ("Idempotency-Key", schemas::idempotency_key),
        ("sink", schemas::sink),
        ("view", schemas::view),
        ("template_id", schemas::template_id),
        ("queue", schemas::queue),
    ];
    let paths: Vec<String> = document.paths.paths.keys().cloned().collect();
    for path in paths {
        for_each_operation(document, &path, |operation| {
            for (name, schema) in rules {
                set_parameter(operation, name, schema());
            }
        });
    }
}

fn namespaces(document: &mut OpenApi, settings: &Settings) {
    let names = |kind: Option<CounterKind>| -> Vec<&str> {
        settings
            .namespaces
            .iter()
            .filter(|(_, namespace)| kind.is_none_or(|kind| namespace.kind == kind))
            .map(|(name, _)| name.as_str())
            .collect()
    };
    for (path, kind) in [
        (COUNTERS, None),
        (COUNTER, None),
        (MEMBERS, Some(CounterKind::Distinct)),
        (INCREMENTS, Some(CounterKind::Sum)),
    ] {
        let names = names(kind);
        if names.is_empty() {
            document.paths.paths.shift_remove(path);
            continue;
        }
        for_each_operation(document, path, |operation| {
            set_parameter(operation, "namespace", names_enum(&names));
        });
    }
    let sums: Vec<&NamespaceSettings> = settings
        .namespaces
        .values()
        .filter(|namespace| namespace.kind == CounterKind::Sum)
        .collect();
    if sums.iter().all(|namespace| !namespace.anonymous_increments) {
        for_each_operation(document, INCREMENTS, |operation| {
            operation.security = Some(bearer());
        });
    }
}

/// An enum of configured names.
fn names_enum(names: &[&str]) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names.to_vec()))
        .build()
}

fn sinks(document: &mut OpenApi, settings: &Settings) {
    let write = take_path(document, WRITES);
    let read = take_path(document, WRITE);
    document.paths.paths.shift_remove(WRITE);
    let (Some(write), Some(read)) = (write, read) else {
        return;
    };
    let mut items = Vec::new();
    for (name, sink) in &settings.sinks {
        add_sink_schemas(document, name, sink);
        let read_id = format!("read_write_{name}");
        items.push((
            format!("/v1/writes/{name}"),
            sink_write_item(&write, name, sink, &read_id),
        ));
        items.push((
            format!("/v1/writes/{name}/{{id}}"),
            sink_read_item(&read, name, sink, &read_id),
        ));
    }
    insert_paths_at(document, WRITES, items);
}

/// `SinkWrite.<sink>` (the body), `SinkRow.<sink>` (a row), `SinkRead.<sink>` and
/// `SinkAccepted.<sink>` (the answers, with the row's schema).
fn add_sink_schemas(document: &mut OpenApi, name: &str, sink: &SinkSettings) {
    let components = document.components.get_or_insert_with(Default::default);
    let with_row = |base: &str| -> Option<RefOr<Schema>> {
        let RefOr::T(Schema::Object(mut answer)) = components.schemas.get(base)?.clone() else {
            return None;
        };
        answer.properties.insert(
            "row".into(),
            Ref::from_schema_name(format!("SinkRow.{name}")).into(),
        );
        Some(RefOr::T(Schema::Object(answer)))
    };
    let read = with_row("WriteRead");
    let accepted = with_row("WriteAccepted");
    let schemas = &mut components.schemas;
    schemas.insert(
        format!("SinkWrite.{name}"),
        RefOr::T(schemas::sink_write(sink)),
    );
    schemas.insert(format!("SinkRow.{name}"), RefOr::T(schemas::sink_row(sink)));
    if let Some(read) = read {
        schemas.insert(format!("SinkRead.{name}"), read);
    }
    if let Some(accepted) = accepted {
        schemas.insert(format!("SinkAccepted.{name}"), accepted);
    }
}

fn sink_write_item(
    template: &PathItem,
    name: &str,
    sink: &SinkSettings,
    read_id: &str,
) -> PathItem {
    let mut item = template.clone();
    if let Some(operation) = item.post.as_mut() {
        operation.operation_id = Some(format!("write_{name}"));
        operation.summary = Some(format!(
            "Store a row in sink `{name}` (table `{}`), in bulk, later. 202 once Kafka holds it.",
            sink.table
        ));
        remove_parameter(operation, "sink");
        operation.request_body = Some(
            RequestBodyBuilder::new()
                .description(Some(match &sink.member_column {
                    Some(column) => format!(
                        "The row: the sink's columns but `{column}`, which the token's `sub` fills."
                    ),
                    None => "The row: the sink's columns.".to_owned(),
                }))
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(format!("SinkWrite.{name}"))))
                        .build(),
                )
                .required(Some(Required::True))
                .build()
                .into(),
        );
        operation.security = Some(match sink.member_column {
            Some(_) => bearer(),
            None => optional_bearer(),
        });
        if let Some(RefOr::T(accepted)) = operation.responses.responses.get_mut("202") {
            set_content_schema(accepted, &format!("SinkAccepted.{name}"));
            let link = LinkBuilder::new()
                .operation_id(read_id)
                .parameter("id", "$response.body#/id")
                .description("Read the write back: pending at once, committed once the batch-writer stored it.")
                .build();
            accepted.links.insert("ReadWrite".into(), link.into());
        }
    }
    item
}

fn sink_read_item(template: &PathItem, name: &str, sink: &SinkSettings, read_id: &str) -> PathItem {
    let mut item = template.clone();
    if let Some(operation) = item.get.as_mut() {
        operation.operation_id = Some(read_id.to_owned());
        operation.summary = Some(format!(
            "A write of sink `{name}`, pending (read back from Redis) or committed (from the database)."
        ));
        remove_parameter(operation, "sink");
        set_parameter(operation, "id", schemas::row_id(sink));
        read_rule_security(operation, &sink.read_rule());
        if let Some(RefOr::T(read)) = operation.responses.responses.get_mut("200") {
            set_content_schema(read, &format!("SinkRead.{name}"));
        }
    }
    item
}

fn views(document: &mut OpenApi, settings: &Settings) {
    let Some(template) = take_path(document, VIEW) else {
        return;
    };
    let items = settings
        .views
        .iter()
        .map(|(name, view)| {
            (
                format!("/v1/views/{name}/{{key}}"),
                view_item(&template, name, view),
            )
        })
        .collect();
    insert_paths_at(document, VIEW, items);
}

fn view_item(template: &PathItem, name: &str, view: &ViewSettings) -> PathItem {
    let mut item = template.clone();
    if let Some(operation) = item.get.as_mut() {
        operation.operation_id = Some(format!("read_view_{name}"));
        let (shape, answer) = match view.result {
            ResultShape::Rows => (
                "rows: an array of its rows",
                Schema::Array(
                    ArrayBuilder::new()
                        .items(Object::with_type(Type::Object))
                        .build(),
                ),
            ),
            ResultShape::One => (
                "one: its first row as an object, 404 when there is none",
                Schema::Object(Object::with_type(Type::Object)),
            ),
        };
        operation.summary = Some(format!("View `{name}` for one key ({shape})."));
        remove_parameter(operation, "view");
        set_parameter(operation, "key", schemas::view_key(view));
        let rule = view.read_rule();
        read_rule_security(operation, &rule);
        if rule == ReadRule::Public {
            operation.responses.responses.remove("403");
        }
        if view.result == ResultShape::Rows {
            operation.responses.responses.remove("404");
        }
        if let Some(RefOr::T(ok)) = operation.responses.responses.get_mut("200")
            && let Some(RefOr::T(content)) = ok.content.get_mut("application/json")
        {
            content.schema = Some(RefOr::T(answer));
        }
    }
    item
}

fn queues(document: &mut OpenApi, settings: &Settings) {
    if settings.queues.is_empty() {
        document.paths.paths.shift_remove(QUEUE_TOKENS);
        document.paths.paths.shift_remove(QUEUE_TOKEN);
        return;
    }
    let names = schemas::queue_names(settings.queues.values());
    for path in [QUEUE_TOKENS, QUEUE_TOKEN] {
        for_each_operation(document, path, |operation| {
            set_parameter(operation, "queue", names.clone());
        });
    }
    let Some(join) = document
        .paths
        .paths
        .get_mut(QUEUE_TOKENS)
        .and_then(|item| item.post.as_mut())
    else {
        return;
    };
    if let Some(RefOr::T(created)) = join.responses.responses.get_mut("201") {
        for (name, operation_id, description) in [
            (
                "Poll",
                "poll_queue",
                "Poll the token: where it stands (each poll is a heartbeat).",
            ),
            (
                "Leave",
                "leave_queue",
                "Leave the line, or end the session.",
            ),
        ] {
            let link = LinkBuilder::new()
                .operation_id(operation_id)
                .parameter("queue", "$request.path.queue")
                .parameter("token", "$response.body#/token")
                .description(description)
                .build();
            created.links.insert(name.into(), link.into());
        }
    }
}

fn templates(document: &mut OpenApi, settings: &Settings) {
    let objects = schemas::template_objects_under(Some(&settings.templates.copy_prefix));
    let Some(RefOr::T(Schema::Object(registering))) = document
        .components
        .as_mut()
        .and_then(|components| components.schemas.get_mut("Registering"))
    else {
        return;
    };
    registering
        .properties
        .insert("objects".into(), RefOr::T(Schema::Array(objects)));
}

/// Who may call an operation under a read rule: anyone (a token is still checked when sent),
/// or a member with a token.
fn read_rule_security(operation: &mut Operation, rule: &ReadRule) {
    operation.security = Some(match rule {
        ReadRule::Public => optional_bearer(),
        ReadRule::Member | ReadRule::Scope(_) => bearer(),
    });
    if let ReadRule::Scope(scope) = rule {
        let note = format!("\n\nNeeds the scope `{scope}`.");
        operation.description = Some(operation.description.take().unwrap_or_default() + &note);
    }
}

fn bearer() -> Vec<SecurityRequirement> {
    vec![SecurityRequirement::new("bearer", Vec::<String>::new())]
}

fn optional_bearer() -> Vec<SecurityRequirement> {
    vec![SecurityRequirement::default(), bearer().remove(0)]
}

/// Points a JSON answer at a component schema.
fn set_content_schema(response: &mut utoipa::openapi::Response, schema: &str) {
    if let Some(RefOr::T(content)) = response.content.get_mut("application/json") {
        content.schema = Some(Ref::from_schema_name(schema).into());
    }
}

fn for_each_operation(document: &mut OpenApi, path: &str, mut change: impl FnMut(&mut Operation)) {
    let Some(item) = document.paths.paths.get_mut(path) else {
        return;
    };
    for operation in [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
    {
        change(operation);
    }
}

fn parameters(operation: &mut Operation) -> impl Iterator<Item = &mut Parameter> {
    operation
        .parameters
        .iter_mut()
        .flatten()
        .filter_map(|parameter| match parameter {
            RefOr::T(parameter) => Some(parameter),
            RefOr::Ref(_) => None,
        })
}

fn set_parameter(operation: &mut Operation, name: &str, schema: impl Into<RefOr<Schema>>) {
    let schema = schema.into();
    for parameter in parameters(operation).filter(|parameter| parameter.name == name) {
        parameter.schema = Some(schema.clone());
    }
}

fn remove_parameter(operation: &mut Operation, name: &str) {
    if let Some(parameters) = operation.parameters.as_mut() {
        parameters.retain(|parameter| !matches!(parameter, RefOr::T(p) if p.name == name));
    }
}

fn take_path(document: &mut OpenApi, path: &str) -> Option<PathItem> {
    document.paths.paths.get(path).cloned()
}

/// Replaces the path `at` with `items`, where it stood.
fn insert_paths_at(document: &mut OpenApi, at: &str, items: Vec<(String, PathItem)>) {
    let paths = &mut document.paths.paths;
    let Some(index) = paths.get_index_of(at) else {
        return;
    };
    paths.shift_remove(at);
    for (offset, (path, item)) in items.into_iter().enumerate() {
        paths.shift_insert(index + offset, path, item);
    }
}
