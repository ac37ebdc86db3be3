//! The gateway's OpenAPI 3.1 document, generated rather than kept by hand: the operations
//! come from the handlers' `#[utoipa::path]`, the bodies and answers from their types
//! (`ToSchema`, `IntoParams`), the shared problem answers from [`problems`], the names and
//! values from the rules that check them ([`schemas`]); then [`deployment`] writes in what
//! the configuration decides: the namespaces, each sink with its columns, each view, the
//! waiting rooms.
//!
//! Served at `GET /openapi.json`, with a page showing it at `GET /docs` (`viewer.html`, no
//! script from elsewhere). docs/openapi.yaml is the document of config/spillway.toml, written
//! by `cargo xtask openapi` (which runs `gateway openapi`).

pub mod deployment;
pub mod ops;
pub mod problems;
pub mod schemas;

use actix_web::{HttpResponse, http::Method, web};
use spillway_core::config::Settings;
use utoipa::{
    Modify, OpenApi,
    openapi::{
        self,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::routes::{counters, queues, resource, templates, views, writes};

/// The document's parts that do not depend on the configuration.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "spillway gateway",
        description = include_str!("description.md"),
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::openapi,
        ops::docs,
        counters::get_many,
        counters::get_one,
        counters::join,
        counters::leave,
        counters::increment,
        writes::create,
        writes::read,
        templates::register,
        templates::show,
        templates::take_copy,
        templates::pool,
        queues::join,
        queues::poll,
        queues::leave,
        views::read,
    ),
    components(
        schemas(problems::Problem),
        responses(
            problems::Unauthorized,
            problems::PayloadTooLarge,
            problems::UnsupportedMediaType,
            problems::Unavailable,
        )
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "counters", description = "Likes (distinct members) and views (sums): `[namespaces.<name>]`."),
        (name = "writes", description = "Rows acknowledged at once and stored in bulk: `[sinks.<name>]`."),
        (name = "templates", description = "Templates and copies of their objects, from a warm pool."),
        (name = "queues", description = "Waiting rooms: `[queues.<name>]`."),
        (name = "views", description = "Cached query results: `[views.<name>]`."),
        (name = "ops", description = "Probes, metrics and this document."),
    )
)]
struct ApiDoc;

/// The `bearer` security scheme the operations name.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, document: &mut openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "HS256 with SPILLWAY_JWT_SECRET; the member is `sub`; `exp` is required; \
                 `scope` holds space-separated scopes (`templates:write`).",
            ))
            .build();
        document
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document of a gateway with these settings.
pub fn document(settings: &Settings) -> openapi::OpenApi {
    let mut document = ApiDoc::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    deployment::apply(&mut document, settings);
    document
}

/// The document as served, rendered once at start.
pub struct ServedDocument {
    json: String,
}

impl ServedDocument {
    pub fn new(document: &openapi::OpenApi) -> anyhow::Result<Self> {
        Ok(Self {
            json: document.to_pretty_json()?,
        })
    }
}

/// The page at `/docs`.
const VIEWER: &str = include_str!("viewer.html");

/// `GET /openapi.json` and `GET /docs`.
pub fn configure(document: web::Data<ServedDocument>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config| {
        config
            .app_data(document)
            .service(resource("/openapi.json", [(Method::GET, web::to(serve))]))
            .service(resource("/docs", [(Method::GET, web::to(viewer))]));
    }
}

async fn serve(document: web::Data<ServedDocument>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document.json.clone())
}

async fn viewer() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(VIEWER)
}
