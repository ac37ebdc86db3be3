//! The cached-view part of `cargo xtask bench reads` (seed 004): 1,000 concurrent attendance
//! checks over the sample's 100,000 enrollments. A check asks whether member M may attend
//! lecture L: it reads L's open lecture and who may attend it, and looks M up in it.
//!
//! - baseline, the same query straight to PostgreSQL with the index: the sample view's SQL
//!   through a pool of 16 connections (the gateway's default), from 1,000 concurrent tasks;
//! - through the gateway: `GET /v1/views/lecture-attendance/{L}` from 1,000 concurrent
//!   clients, cold at the start (each lecture loaded once, then served from Redis).
//!
//! Every answer is checked against the enrollment's status. The database load is the
//! number of scans of `lectures` (one per query) in PostgreSQL's statistics over the case's
//! wall time; the connections of a case are closed before the count is read, because a
//! backend reports its statistics when it exits (an idle one may hold them for seconds).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use rand::Rng;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde_json::Value;
use spillway_core::views::ViewSettings;

use super::{Report, Samples, closed_loop};
use crate::{
    SAMPLE_SINKS, TestConfig,
    api::Api,
    db, spawn_gateway,
    views::{load_sample_schema, sample_views_toml, settled_table_scans},
};

const VIEW: &str = "lecture-attendance";
const CLIENTS: usize = 1_000;
/// Checks per client: about ten seconds of each case on this machine.
const DIRECT_CHECKS_PER_CLIENT: usize = 15;
const VIEW_CHECKS_PER_CLIENT: usize = 60;
/// The direct baseline's pool: the gateway's `database.max_connections` default.
const DIRECT_POOL: u32 = 16;
const BASELINE: &str = "direct: the view's SQL on PostgreSQL (index), pool of 16";
const CASE: &str = "view: GET /v1/views/lecture-attendance/{id}";

/// One enrollment: who, where, and whether they may attend.
#[derive(Debug, Clone)]
struct Enrollment {
    lecture_id: i64,
    member_id: String,
    approved: bool,
}

/// What a case measured.
struct Measured {
    samples: Samples,
    queries: i64,
    wrong_answers: u64,
}

impl Measured {
    fn queries_per_second(&self) -> f64 {
        self.queries as f64 / self.samples.summary().count.max(1) as f64
            * self.samples.summary().per_second
    }
}

/// Adds the cached-view rows and findings to `report`.
pub async fn run(report: &mut Report) -> anyhow::Result<()> {
    let config = TestConfig::new(&format!("{SAMPLE_SINKS}{}", sample_views_toml()));
    let database = db::connect(&config).await;
    load_sample_schema(&database).await;
    let enrollments = Arc::new(enrollments(&database).await?);
    let settings = config.settings().views[VIEW].clone();
    let direct = direct_checks(&config, &database, &settings, &enrollments).await?;
    let cached = view_checks(&config, &database, &enrollments).await?;
    for (case, measured) in [(BASELINE, &direct), (CASE, &cached)] {
        anyhow::ensure!(
            measured.wrong_answers == 0,
            "{case}: {} wrong answers",
            measured.wrong_answers
        );
    }
    let baseline = report.add(
        BASELINE,
        None,
        &direct.samples,
        &format!("1,000 concurrent; {} queries", direct.queries),
    );
    let summary = report.add(
        CASE,
        Some(BASELINE),
        &cached.samples,
        &format!("1,000 concurrent, cold start; {} queries", cached.queries),
    );
    let p99_ratio = baseline.p99_ms / summary.p99_ms.max(1e-9);
    let load_ratio = direct.queries_per_second() / cached.queries_per_second().max(1e-9);
    report.finding(
        "views: p99, direct / view (target >= 20x)",
        format!(
            "{:.1} ms / {:.1} ms = {p99_ratio:.1}x: {}",
            baseline.p99_ms,
            summary.p99_ms,
            verdict(p99_ratio >= 20.0)
        ),
    );
    report.finding(
        "views: database queries per second, direct / view (target >= 100x)",
        format!(
            "{:.0} / {:.1} = {load_ratio:.0}x: {}",
            direct.queries_per_second(),
            cached.queries_per_second(),
            verdict(load_ratio >= 100.0)
        ),
    );
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

async fn enrollments(database: &DatabaseConnection) -> anyhow::Result<Vec<Enrollment>> {
    let rows = database
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT lecture_id, member_id, status = 'approved' AS approved FROM enrollments",
        ))
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Enrollment {
                lecture_id: row.try_get("", "lecture_id")?,
                member_id: row.try_get("", "member_id")?,
                approved: row.try_get("", "approved")?,
            })
        })
        .collect()
}

/// Whether a lecture's JSON says the member may attend, as the enrollment says.
fn answer_is_right(lecture: &Value, enrollment: &Enrollment) -> bool {
    let listed = lecture["may_attend"]
        .as_array()
        .is_some_and(|members| members.iter().any(|m| m == enrollment.member_id.as_str()));
    lecture["open"] == true && listed == enrollment.approved
}

fn random_enrollment(enrollments: &[Enrollment]) -> Enrollment {
    enrollments[rand::rng().random_range(0..enrollments.len())].clone()
}

/// The baseline: each check runs the view's query itself.
async fn direct_checks(
    config: &TestConfig,
    database: &DatabaseConnection,
    settings: &ViewSettings,
    enrollments: &Arc<Vec<Enrollment>>,
) -> anyhow::Result<Measured> {
    let before = settled_table_scans(database, "lectures").await;
    let mut options = sea_orm::ConnectOptions::new(crate::stack::Stack::current().database_url);
    options
        .set_schema_search_path(config.schema.clone())
        .max_connections(DIRECT_POOL)
        .sqlx_logging(false);
    let pool = sea_orm::Database::connect(options).await?;
    let sql = Arc::new(settings.load_sql());
    let wrong = Arc::new(AtomicU64::new(0));
    let samples = closed_loop(CLIENTS, DIRECT_CHECKS_PER_CLIENT, {
        let (pool, sql, enrollments, wrong) =
            (pool.clone(), sql, enrollments.clone(), wrong.clone());
        move |_, _| {
            let (pool, sql, wrong) = (pool.clone(), sql.clone(), wrong.clone());
            let enrollment = random_enrollment(&enrollments);
            async move {
                let statement = Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    sql.as_str(),
                    [enrollment.lecture_id.into()],
                );
                let Ok(Some(row)) = pool.query_one_raw(statement).await else {
                    return 503;
                };
                let body: String = row.try_get("", "body").unwrap_or_default();
                check(&body, &enrollment, &wrong)
            }
        }
    })
    .await;
    pool.close().await?;
    let queries = settled_table_scans(database, "lectures").await - before;
    Ok(Measured {
        samples,
        queries,
        wrong_answers: wrong.load(Ordering::Relaxed),
    })
}

/// Counts a wrong answer; the status the closed loop expects either way.
fn check(body: &str, enrollment: &Enrollment, wrong: &AtomicU64) -> u16 {
    let lecture: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if !answer_is_right(&lecture, enrollment) {
        wrong.fetch_add(1, Ordering::Relaxed);
    }
    200
}

/// Through the gateway: each check reads the view.
async fn view_checks(
    config: &TestConfig,
    database: &DatabaseConnection,
    enrollments: &Arc<Vec<Enrollment>>,
) -> anyhow::Result<Measured> {
    let before = settled_table_scans(database, "lectures").await;
    let gateway = spawn_gateway(config).await;
    let api = Api::new(format!("http://127.0.0.1:{}", gateway.port));
    let wrong = Arc::new(AtomicU64::new(0));
    let samples = closed_loop(CLIENTS, VIEW_CHECKS_PER_CLIENT, {
        let (enrollments, wrong) = (enrollments.clone(), wrong.clone());
        move |_, _| {
            let (api, wrong) = (api.clone(), wrong.clone());
            let enrollment = random_enrollment(&enrollments);
            async move {
                let url = format!("{}/v1/views/{VIEW}/{}", api.base_url, enrollment.lecture_id);
                let Ok(response) = api.client.get(url).send().await else {
                    return 0;
                };
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                if status != 200 {
                    return status;
                }
                check(&body, &enrollment, &wrong)
            }
        }
    })
    .await;
    gateway.stop().await?;
    let queries = settled_table_scans(database, "lectures").await - before;
    Ok(Measured {
        samples,
        queries,
        wrong_answers: wrong.load(Ordering::Relaxed),
    })
}
