//! The OpenAPI document of the sample configuration (config/spillway.toml): what the
//! configuration writes into it (namespaces, sinks with their column schemas, views, queue
//! patterns), the links schemathesis follows, and docs/openapi.yaml being that document.

use std::path::PathBuf;

use serde_json::{Value, json};
use spillway_core::config::Settings;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sample_settings() -> Settings {
    Settings::load_file(&repo().join("config/spillway.toml")).expect("the sample configuration")
}

fn sample_document() -> Value {
    serde_json::to_value(gateway::openapi::document(&sample_settings())).expect("JSON")
}

/// The value at a JSON pointer, which must be there.
fn at<'a>(document: &'a Value, pointer: &str) -> &'a Value {
    document
        .pointer(pointer)
        .unwrap_or_else(|| panic!("the document has no {pointer}"))
}

/// The schema of parameter `name` of an operation.
fn parameter<'a>(operation: &'a Value, name: &str) -> &'a Value {
    operation["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|parameter| parameter["name"] == name)
        .map(|parameter| &parameter["schema"])
        .unwrap_or_else(|| panic!("no parameter {name}"))
}

#[test]
fn namespaces_are_enums_of_the_configured_ones() {
    let document = sample_document();
    let counters = at(&document, "/paths/~1v1~1counters~1{namespace}/get");
    assert_eq!(
        parameter(counters, "namespace")["enum"],
        json!(["video-likes", "video-views"])
    );
    let likes = at(
        &document,
        "/paths/~1v1~1counters~1{namespace}~1{entity_id}~1members~1me/put",
    );
    assert_eq!(
        parameter(likes, "namespace")["enum"],
        json!(["video-likes"])
    );
    let increments = at(
        &document,
        "/paths/~1v1~1counters~1{namespace}~1{entity_id}~1increments/post",
    );
    assert_eq!(
        parameter(increments, "namespace")["enum"],
        json!(["video-views"])
    );
}

#[test]
fn each_sink_has_its_paths_and_a_body_of_its_columns() {
    let document = sample_document();
    let paths = at(&document, "/paths").as_object().expect("paths");
    assert!(!paths.contains_key("/v1/writes/{sink}"));
    let write = at(&document, "/paths/~1v1~1writes~1playlists/post");
    assert_eq!(write["operationId"], "write_playlists");
    assert_eq!(
        write["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/SinkWrite.playlists"
    );
    assert_eq!(
        write["responses"]["202"]["links"]["ReadWrite"]["operationId"],
        "read_write_playlists"
    );
    assert!(paths.contains_key("/v1/writes/playlists/{id}"));

    let body = at(&document, "/components/schemas/SinkWrite.playlists");
    assert_eq!(body["required"], json!(["title"]));
    assert_eq!(body["additionalProperties"], false);
    let columns = body["properties"].as_object().expect("columns");
    let mut names: Vec<&str> = columns.keys().map(String::as_str).collect();
    names.sort_unstable();
    // member_id is the token's `sub`, not the body's.
    assert_eq!(
        names,
        ["created_at", "description", "id", "title", "visibility"]
    );
    assert_eq!(columns["id"]["format"], "uuid");
    assert_eq!(columns["created_at"]["format"], "date-time");
    assert_eq!(columns["title"]["type"], "string");
    assert_eq!(columns["title"]["maxLength"], 200);
    assert_eq!(columns["description"]["maxLength"], 2000);
    assert_eq!(columns["visibility"]["type"], json!(["string", "null"]));
}

#[test]
fn each_view_has_its_path_with_its_key() {
    let document = sample_document();
    let paths = at(&document, "/paths").as_object().expect("paths");
    assert!(!paths.contains_key("/v1/views/{view}/{key}"));
    let lecture = at(
        &document,
        "/paths/~1v1~1views~1lecture-attendance~1{key}/get",
    );
    assert_eq!(lecture["operationId"], "read_view_lecture-attendance");
    assert_eq!(parameter(lecture, "key")["type"], "integer");
    let playlists = at(&document, "/paths/~1v1~1views~1member-playlists~1{key}/get");
    assert_eq!(playlists["operationId"], "read_view_member-playlists");
    assert_eq!(parameter(playlists, "key")["maxLength"], 128);
}

#[test]
fn queues_match_the_configured_patterns_and_link_to_their_tokens() {
    let document = sample_document();
    let join = at(&document, "/paths/~1v1~1queues~1{queue}~1tokens/post");
    assert_eq!(
        parameter(join, "queue")["pattern"],
        "^(?:concert-[A-Za-z0-9._-]*)$"
    );
    let links = &join["responses"]["201"]["links"];
    assert_eq!(links["Poll"]["operationId"], "poll_queue");
    assert_eq!(links["Leave"]["operationId"], "leave_queue");
    assert_eq!(
        links["Poll"]["parameters"]["token"],
        "$response.body#/token"
    );
    let token = at(&document, "/paths/~1v1~1queues~1{queue}~1tokens~1{token}");
    assert_eq!(
        parameter(&token["get"], "queue")["pattern"],
        "^(?:concert-[A-Za-z0-9._-]*)$"
    );
}

#[test]
fn a_registration_links_to_its_template_and_has_an_example() {
    let document = sample_document();
    let register = at(&document, "/paths/~1v1~1templates~1{template_id}/put");
    for status in ["200", "201"] {
        let links = &register["responses"][status]["links"];
        for (name, operation) in [
            ("ReadTemplate", "read_template"),
            ("ReadPool", "read_pool"),
            ("TakeCopy", "take_copy"),
        ] {
            assert_eq!(links[name]["operationId"], operation, "{status} {name}");
            assert_eq!(
                links[name]["parameters"]["template_id"],
                "$request.path.template_id"
            );
        }
    }
    let example = &register["requestBody"]["content"]["application/json"]["example"];
    assert!(example["objects"].as_array().is_some_and(|o| !o.is_empty()));
    let objects = at(
        &document,
        "/components/schemas/Registering/properties/objects",
    );
    assert_eq!(objects["items"]["not"]["pattern"], "^copies/");
}

#[test]
fn docs_openapi_yaml_is_the_generated_document() {
    let generated = gateway::openapi::document(&sample_settings())
        .to_yaml()
        .expect("YAML");
    let file =
        std::fs::read_to_string(repo().join("docs/openapi.yaml")).expect("docs/openapi.yaml");
    assert!(
        file.trim_end() == generated.trim_end(),
        "docs/openapi.yaml is not the generated document: run `cargo xtask openapi`"
    );
}
