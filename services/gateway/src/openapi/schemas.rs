//! The schemas of names and values, each built from the rule the gateway checks it with
//! (`NameRule`s, the key and column types), so the document and the checks cannot drift:
//! path parameters, the Idempotency-Key, template objects, a view's key, a sink's columns.
//!
//! The schemas of configured names (namespaces, sinks, views, queues) are the rule alone
//! here; [`super::deployment`] narrows them to the configured ones.

use spillway_core::{
    check::NameRule,
    counters::config::{ENTITY_ID, NAMESPACE_NAME},
    queues::{QueueSettings, config::QUEUE_NAME},
    sinks::{
        SinkSettings,
        config::{ColumnSettings, ColumnType, SINK_NAME, WIRE_INTEGER_LIMIT},
    },
    templates::{MAX_KEY_CHARS, MAX_OBJECTS, config::TEMPLATE_ID},
    views::config::{KeyType, VIEW_NAME, ViewSettings},
};
use utoipa::openapi::{
    Array, ArrayBuilder, KnownFormat, Object, ObjectBuilder, RefOr, Schema, SchemaFormat, Type,
    extensions::Extensions,
    schema::{AdditionalProperties, SchemaType},
};

use crate::routes::counters::{MAX_IDS, MAX_IDS_LENGTH};

/// A string of `rule`.
fn name(rule: &NameRule) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(rule.max_len))
        .pattern(Some(rule.pattern()))
        .build()
}

pub fn namespace() -> Object {
    name(&NAMESPACE_NAME)
}

pub fn entity_id() -> Object {
    name(&ENTITY_ID)
}

pub fn sink() -> Object {
    name(&SINK_NAME)
}

pub fn view() -> Object {
    name(&VIEW_NAME)
}

pub fn template_id() -> Object {
    name(&TEMPLATE_ID)
}

/// Any queue name; [`queue_names`] is the configured ones.
pub fn queue() -> Object {
    name(&QUEUE_NAME)
}

/// `ids=a,b,c`: 1 to [`MAX_IDS`] entity ids, [`MAX_IDS_LENGTH`] characters at most.
pub fn entity_ids() -> Object {
    let id = format!("{}{{1,{}}}", ENTITY_ID.class(), ENTITY_ID.max_len);
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_IDS_LENGTH))
        .pattern(Some(format!("^{id}(,{id}){{0,{}}}$", MAX_IDS - 1)))
        .build()
}

/// 1-128 visible ASCII characters.
pub fn idempotency_key() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(128))
        .pattern(Some("^[!-~]{1,128}$"))
        .build()
}

/// Control characters (Unicode's `Cc`: what `char::is_control` refuses), as a class body.
const CONTROL: &str = "\\u0000-\\u001f\\u007f-\\u009f";

/// The source keys of a registration (any copy prefix; [`template_objects_under`] names the
/// configured one).
pub fn template_objects() -> Array {
    template_objects_under(None)
}

/// The source keys of a registration: 1-1000 distinct keys of 1-1024 characters, without
/// control characters or a leading `/`, and none under `copy_prefix/`.
pub fn template_objects_under(copy_prefix: Option<&str>) -> Array {
    let mut key = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_KEY_CHARS))
        .pattern(Some(format!(
            "^[^/{CONTROL}][^{CONTROL}]{{0,{}}}$",
            MAX_KEY_CHARS - 1
        )))
        .build();
    if let Some(prefix) = copy_prefix {
        key.description = Some(format!("Not under the copy prefix `{prefix}/`."));
        // utoipa's Object has no `not`; an extension key is written as it is.
        key.extensions = Some(Extensions::from_iter([(
            "not",
            serde_json::json!({"pattern": format!("^{}/", regex_escape(prefix))}),
        )]));
    }
    ArrayBuilder::new()
        .description(Some(
            "Source keys in the configured bucket, in order, each listed once: 1-1024 \
             characters without control characters or a leading `/`.",
        ))
        .items(key)
        .min_items(Some(1))
        .max_items(Some(MAX_OBJECTS))
        .unique_items(true)
        .build()
}

/// `text` with its regular-expression characters escaped.
pub fn regex_escape(text: &str) -> String {
    text.chars().fold(String::new(), |mut escaped, c| {
        if "\\^$.|?*+()[]{}".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
        escaped
    })
}

/// The queue names the configured patterns match: an exact name, or a prefix ending in `*`.
pub fn queue_names<'a>(queues: impl Iterator<Item = &'a QueueSettings>) -> Object {
    let alternatives: Vec<String> = queues
        .map(|queue| match queue.pattern.strip_suffix('*') {
            Some(prefix) => format!("{}{}*", regex_escape(prefix), QUEUE_NAME.class()),
            None => regex_escape(&queue.pattern),
        })
        .collect();
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(QUEUE_NAME.max_len))
        .pattern(Some(format!("^(?:{})$", alternatives.join("|"))))
        .build()
}

/// A view's key, of its `key_type`.
pub fn view_key(view: &ViewSettings) -> Object {
    match view.key_type {
        KeyType::Text => ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(view.key_max_length))
            .pattern(Some(format!(
                "^[A-Za-z0-9._:@-]{{1,{}}}$",
                view.key_max_length
            )))
            .build(),
        KeyType::Bigint => integer(i64::MIN, i64::MAX, KnownFormat::Int64),
        KeyType::Uuid => ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .build(),
    }
}

fn integer(minimum: i64, maximum: i64, format: KnownFormat) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(format)))
        .minimum(Some(minimum))
        .maximum(Some(maximum))
        .build()
}

/// A column's values, as [`ColumnType::accepts`] and the length check take them.
pub fn column(column: &ColumnSettings) -> Object {
    let bigint = WIRE_INTEGER_LIMIT as i64 - 1;
    let mut schema = match column.kind {
        ColumnType::Text => ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(column.max_length)
            // PostgreSQL's text cannot hold U+0000.
            .pattern(Some(match column.max_length {
                Some(max) => format!("^[^\\u0000]{{0,{max}}}$"),
                None => "^[^\\u0000]*$".to_owned(),
            }))
            .build(),
        ColumnType::Bigint => integer(-bigint, bigint, KnownFormat::Int64),
        ColumnType::Integer => integer(i32::MIN.into(), i32::MAX.into(), KnownFormat::Int32),
        ColumnType::Double => ObjectBuilder::new()
            .schema_type(Type::Number)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
            .build(),
        ColumnType::Boolean => Object::with_type(Type::Boolean),
        ColumnType::Uuid => ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .build(),
        ColumnType::Timestamptz => ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .build(),
        ColumnType::Jsonb => Object::with_type(SchemaType::AnyValue),
    };
    schema.description = Some(format!(
        "`{}`{}{}",
        column.kind.sql(),
        if column.required { ", required" } else { "" },
        if column.default_now {
            "; the time the write was accepted when absent"
        } else {
            ""
        }
    ));
    schema
}

/// `schema`, or null (an optional column: null is the same as absent).
fn or_null(mut schema: Object) -> Object {
    schema.schema_type = match schema.schema_type {
        SchemaType::Type(kind) => SchemaType::from_iter([kind, Type::Null]),
        other => other,
    };
    schema
}

/// The body of a write to `sink`: every column but the member column (the token fills it);
/// the required ones, and a primary key the gateway cannot make, are required; optional
/// ones may be null.
pub fn sink_write(sink: &SinkSettings) -> Schema {
    let generated_key = sink.primary_key_type() == Some(ColumnType::Uuid);
    let mut body = ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    for (name, settings) in &sink.columns {
        if Some(name) == sink.member_column.as_ref() {
            continue;
        }
        let is_key = *name == sink.primary_key;
        let required = settings.required || (is_key && !generated_key);
        let schema = if required || is_key {
            column(settings)
        } else {
            or_null(column(settings))
        };
        body = body.property(name, schema);
        if required {
            body = body.required(name);
        }
    }
    Schema::Object(body.build())
}

/// A row of `sink` as stored: the key and the required columns always; the others null or
/// absent when nothing was written (a row from a producer other than the gateway may lack
/// the member column and `default_now` timestamps too).
pub fn sink_row(sink: &SinkSettings) -> Schema {
    let mut row = ObjectBuilder::new().schema_type(Type::Object);
    for (name, settings) in &sink.columns {
        let always = *name == sink.primary_key || settings.required;
        let schema = if always {
            column(settings)
        } else {
            or_null(column(settings))
        };
        row = row.property(name, schema);
        if always {
            row = row.required(name);
        }
    }
    Schema::Object(row.build())
}

/// A row id in a URL, of the primary key's type.
pub fn row_id(sink: &SinkSettings) -> RefOr<Schema> {
    let schema = match sink.columns.get(&sink.primary_key) {
        Some(settings) => column(settings),
        None => Object::with_type(Type::String),
    };
    RefOr::T(Schema::Object(schema))
}
