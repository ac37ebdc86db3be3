//! The environment a client of the local stack needs, in one place: printed by `up` and
//! `env`, exported to the tests, the benchmarks and the services `up` starts.

use crate::{
    paths::Paths,
    stack::{kafka, postgres, redis, s3},
};

/// A fixed secret for the local stack only.
pub const DEV_JWT_SECRET: &str = "dev-secret-change-me";

/// What a client of the stack needs: its addresses and credentials.
pub fn stack_variables() -> Vec<(&'static str, String)> {
    vec![
        ("KAFKA_BOOTSTRAP", format!("127.0.0.1:{}", kafka::PORT)),
        ("REDIS_URL", format!("redis://127.0.0.1:{}", redis::PORT)),
        (
            "DATABASE_URL",
            format!(
                "postgres://{}@127.0.0.1:{}/{}",
                postgres::USER,
                postgres::PORT,
                postgres::DATABASE
            ),
        ),
        ("S3_ENDPOINT", format!("http://127.0.0.1:{}", s3::PORT)),
        ("S3_ACCESS_KEY", s3::ACCESS_KEY.to_owned()),
        ("S3_SECRET_KEY", s3::SECRET_KEY.to_owned()),
        ("S3_BUCKET", "spillway".to_owned()),
    ]
}

/// The stack's variables plus what the services started by `up` read: the sample
/// configuration and the development JWT secret.
pub fn variables(paths: &Paths) -> Vec<(&'static str, String)> {
    let mut variables = stack_variables();
    variables.push(("SPILLWAY_JWT_SECRET", DEV_JWT_SECRET.to_owned()));
    let config = paths.repo.join("config/spillway.toml");
    variables.push(("SPILLWAY_CONFIG", config.display().to_string()));
    variables
}

pub fn print_exports(paths: &Paths) {
    for (name, value) in variables(paths) {
        println!("export {name}='{value}'");
    }
}
