//! The SQL of views: the load statement that turns a view's rows into one JSON text, and
//! the `RETURNING` clause that tells the batch-writer which view keys a commit changed.

use super::config::{ResultShape, ViewSettings};

/// The column of the load query that carries the JSON result.
pub const BODY_COLUMN: &str = "body";
/// The column of a sink's `RETURNING` clause that carries the view keys of a changed row.
pub const RETURNED_KEYS_COLUMN: &str = "view_keys";

impl ViewSettings {
    /// The statement a load runs: the view's query with its rows turned into one JSON text in
    /// column `body` (NULL for `one` without a row). `$1` is the key.
    pub fn load_sql(&self) -> String {
        let query = self.sql.trim();
        match self.result {
            ResultShape::Rows => format!(
                "SELECT coalesce(json_agg(v), '[]'::json)::text AS {BODY_COLUMN} FROM ({query}) AS v"
            ),
            ResultShape::One => format!(
                "SELECT (SELECT row_to_json(v) FROM ({query}) AS v LIMIT 1)::text AS {BODY_COLUMN}"
            ),
        }
    }
}

/// ` RETURNING json_build_object('c', "c", …)::text AS view_keys`: appended to a sink's
/// INSERT and DELETE so the batch-writer learns which view keys its commit changed.
pub fn returning_clause<'a>(columns: impl IntoIterator<Item = &'a str>) -> String {
    let pairs: Vec<String> = columns
        .into_iter()
        .map(|column| format!("'{column}', \"{column}\""))
        .collect();
    format!(
        " RETURNING json_build_object({})::text AS {RETURNED_KEYS_COLUMN}",
        pairs.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::fixtures::view;

    #[test]
    fn the_load_wraps_the_query_into_one_json_text() {
        let rows = view("").load_sql();
        assert!(
            rows.starts_with(
                "SELECT coalesce(json_agg(v), '[]'::json)::text AS body FROM (SELECT id"
            )
        );
        let one = view("result = \"one\"").load_sql();
        assert!(one.contains("row_to_json(v)") && one.contains("LIMIT 1"));
    }

    #[test]
    fn the_returning_clause_names_the_key_columns() {
        assert_eq!(
            returning_clause(["member_id"]),
            " RETURNING json_build_object('member_id', \"member_id\")::text AS view_keys"
        );
    }
}
