//! A batch reduced to one change per row id, as the sink's conflict rule says a sequence of
//! writes of one id ends:
//! - `upsert`: the last write wins (a delete then a write is that write, an upsert).
//! - `ignore`: the first write wins, as `ON CONFLICT DO NOTHING` does across batches: later
//!   writes of the id change nothing, unless a delete comes between; then the first write
//!   after the last delete wins, and it replaces whatever the table held.

use std::collections::HashMap;

use serde_json::{Map, Value};
use spillway_core::sinks::ConflictRule;

/// What a batch does to one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Upsert(Map<String, Value>),
    Delete(String),
    /// Delete the stored row, then insert this one (`ignore` sinks, a write after a delete).
    Replace(String, Map<String, Value>),
}

/// Where a row id stands while the batch is read, for an `ignore` sink.
struct IgnoreState {
    index: usize,
    deleted: bool,
    first_write: Option<Map<String, Value>>,
}

/// One change per id, in first-seen order of the ids, each with the batch index of the
/// event that decided it (for rejections).
pub fn reduce(
    writes: impl IntoIterator<Item = (usize, String, Change)>,
    rule: ConflictRule,
) -> Vec<(usize, Change)> {
    match rule {
        ConflictRule::Upsert => last_wins(writes),
        ConflictRule::Ignore => first_wins(writes),
    }
}

fn last_wins(writes: impl IntoIterator<Item = (usize, String, Change)>) -> Vec<(usize, Change)> {
    let mut slots: HashMap<String, usize> = HashMap::new();
    let mut changes: Vec<(usize, Change)> = Vec::new();
    for (index, id, change) in writes {
        match slots.get(&id) {
            Some(&slot) => changes[slot] = (index, change),
            None => {
                slots.insert(id, changes.len());
                changes.push((index, change));
            }
        }
    }
    changes
}

fn first_wins(writes: impl IntoIterator<Item = (usize, String, Change)>) -> Vec<(usize, Change)> {
    let mut order: Vec<String> = Vec::new();
    let mut states: HashMap<String, IgnoreState> = HashMap::new();
    for (index, id, change) in writes {
        let state = states.entry(id.clone()).or_insert_with(|| {
            order.push(id.clone());
            IgnoreState {
                index,
                deleted: false,
                first_write: None,
            }
        });
        match change {
            Change::Delete(_) => {
                state.deleted = true;
                state.first_write = None;
                state.index = index;
            }
            Change::Upsert(row) | Change::Replace(_, row) if state.first_write.is_none() => {
                state.first_write = Some(row);
                state.index = index;
            }
            Change::Upsert(_) | Change::Replace(..) => {}
        }
    }
    order
        .into_iter()
        .filter_map(|id| {
            let state = states.remove(&id)?;
            let change = match (state.deleted, state.first_write) {
                (false, Some(row)) => Change::Upsert(row),
                (true, Some(row)) => Change::Replace(id, row),
                (true, None) => Change::Delete(id),
                (false, None) => return None,
            };
            Some((state.index, change))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(title: &str) -> Map<String, Value> {
        json!({ "title": title }).as_object().unwrap().clone()
    }

    fn upsert(index: usize, id: &str, title: &str) -> (usize, String, Change) {
        (index, id.into(), Change::Upsert(row(title)))
    }

    fn delete(index: usize, id: &str) -> (usize, String, Change) {
        (index, id.into(), Change::Delete(id.into()))
    }

    #[test]
    fn an_upsert_sink_keeps_the_last_write_of_an_id() {
        let writes = [
            upsert(0, "a", "one"),
            upsert(1, "b", "x"),
            upsert(2, "a", "two"),
        ];
        let reduced = reduce(writes, ConflictRule::Upsert);
        assert_eq!(
            reduced,
            [
                (2, Change::Upsert(row("two"))),
                (1, Change::Upsert(row("x")))
            ]
        );
        let reduced = reduce(
            [upsert(0, "a", "one"), delete(1, "a")],
            ConflictRule::Upsert,
        );
        assert_eq!(reduced, [(1, Change::Delete("a".into()))]);
    }

    #[test]
    fn an_ignore_sink_keeps_the_first_write_unless_a_delete_comes_between() {
        let reduced = reduce(
            [upsert(0, "a", "one"), upsert(1, "a", "two")],
            ConflictRule::Ignore,
        );
        assert_eq!(reduced, [(0, Change::Upsert(row("one")))]);
        let reduced = reduce(
            [
                upsert(0, "a", "one"),
                delete(1, "a"),
                upsert(2, "a", "two"),
                upsert(3, "a", "three"),
            ],
            ConflictRule::Ignore,
        );
        assert_eq!(reduced, [(2, Change::Replace("a".into(), row("two")))]);
        let reduced = reduce(
            [upsert(0, "a", "one"), delete(1, "a")],
            ConflictRule::Ignore,
        );
        assert_eq!(reduced, [(1, Change::Delete("a".into()))]);
    }
}
