//! Combining a counter's events before Redis: what one `counter_apply.lua` call carries.
//!
//! A hot counter gets thousands of events in one consumer batch; applying each costs the
//! script a loop turn and a few Redis commands. Sums add up and a member's set state is its
//! last operation, so most of a batch collapses:
//! - a sum counter's increments without an event id become one entry per partition (their
//!   sum, their first and last offset, how many);
//! - a distinct counter's operations without an event id become one entry per member and
//!   partition (its last operation, at its offset);
//! - events with an event id stay one entry each, in order, so each id is checked and
//!   recorded.
//!
//! The script compares an entry with the partition's applied offset before the call: all at
//! or below it is a replay, all above it is applied. A combined sum that straddles it (a
//! batch overlapping one applied before a crash) cannot be split in Redis: the script then
//! changes nothing and says so, and the store sends that counter's events one by one
//! ([`one_per_event`]).

use std::collections::{BTreeMap, HashSet};

use super::store::{EventToApply, Operation};

/// One entry of the apply script's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub operation: &'static str,
    /// The member, or the delta.
    pub argument: String,
    /// `""` when no id is recorded.
    pub event_id: String,
    /// How many events the entry stands for.
    pub count: u64,
}

impl Entry {
    fn single(event: &EventToApply) -> Self {
        let (operation, argument) = match &event.operation {
            Operation::AddMember(member) => ("add", member.clone()),
            Operation::RemoveMember(member) => ("remove", member.clone()),
            Operation::Increment(delta) => ("incr", delta.to_string()),
        };
        Self {
            partition: event.partition,
            first_offset: event.offset,
            last_offset: event.offset,
            operation,
            argument,
            event_id: event.event_id.clone().unwrap_or_default(),
            count: 1,
        }
    }
}

/// Every event its own entry, in order.
pub fn one_per_event(events: &[EventToApply]) -> Vec<Entry> {
    events.iter().map(Entry::single).collect()
}

/// The fewest entries that apply `events` (one counter's, in the order they were read)
/// exactly as applying them one by one would.
pub fn combine(events: &[EventToApply]) -> Vec<Entry> {
    // Members with an id'd event keep all their events in order (each id is checked).
    let members_with_ids: HashSet<&str> = events
        .iter()
        .filter(|event| event.event_id.is_some())
        .filter_map(|event| event.operation.member())
        .collect();
    let mut sums: BTreeMap<i32, Entry> = BTreeMap::new();
    let mut last_operations: BTreeMap<(i32, &str), Entry> = BTreeMap::new();
    let mut singles = Vec::new();
    for event in events {
        match (&event.operation, &event.event_id) {
            (Operation::Increment(delta), None) => add_to_sum(&mut sums, event, *delta),
            (Operation::AddMember(member) | Operation::RemoveMember(member), None)
                if !members_with_ids.contains(member.as_str()) =>
            {
                last_operations.insert((event.partition, member), Entry::single(event));
            }
            _ => singles.push(Entry::single(event)),
        }
    }
    let mut entries: Vec<Entry> = sums.into_values().collect();
    entries.extend(last_operations.into_values());
    entries.extend(singles);
    entries
}

fn add_to_sum(sums: &mut BTreeMap<i32, Entry>, event: &EventToApply, delta: i64) {
    let entry = sums.entry(event.partition).or_insert_with(|| Entry {
        partition: event.partition,
        first_offset: event.offset,
        last_offset: event.offset,
        operation: "incr",
        argument: "0".into(),
        event_id: String::new(),
        count: 0,
    });
    let total: i64 = entry.argument.parse().unwrap_or(0) + delta;
    entry.argument = total.to_string();
    entry.first_offset = entry.first_offset.min(event.offset);
    entry.last_offset = entry.last_offset.max(event.offset);
    entry.count += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(partition: i32, offset: i64, operation: Operation, id: Option<&str>) -> EventToApply {
        EventToApply {
            partition,
            offset,
            operation,
            event_id: id.map(str::to_owned),
        }
    }

    fn add(member: &str) -> Operation {
        Operation::AddMember(member.into())
    }

    fn remove(member: &str) -> Operation {
        Operation::RemoveMember(member.into())
    }

    #[test]
    fn increments_without_ids_become_one_sum_per_partition() {
        let events = [
            event(0, 10, Operation::Increment(2), None),
            event(1, 5, Operation::Increment(1), None),
            event(0, 11, Operation::Increment(3), None),
            event(0, 12, Operation::Increment(1), Some("k1")),
            event(0, 13, Operation::Increment(4), None),
        ];
        let entries = combine(&events);
        assert_eq!(entries.len(), 3);
        assert_eq!(
            (
                entries[0].partition,
                entries[0].first_offset,
                entries[0].last_offset
            ),
            (0, 10, 13)
        );
        assert_eq!((entries[0].argument.as_str(), entries[0].count), ("9", 3));
        assert_eq!(
            (entries[1].partition, entries[1].argument.as_str()),
            (1, "1")
        );
        assert_eq!((entries[2].event_id.as_str(), entries[2].count), ("k1", 1));
    }

    #[test]
    fn a_members_last_operation_stands_for_all_of_its_operations() {
        let events = [
            event(0, 1, add("ada"), None),
            event(0, 2, add("bob"), None),
            event(0, 3, remove("ada"), None),
            event(0, 4, add("ada"), None),
            event(0, 5, remove("bob"), None),
        ];
        let entries = combine(&events);
        let by_member: Vec<(&str, &str, i64)> = entries
            .iter()
            .map(|e| (e.argument.as_str(), e.operation, e.last_offset))
            .collect();
        assert_eq!(by_member, [("ada", "add", 4), ("bob", "remove", 5)]);
    }

    #[test]
    fn a_member_with_an_event_id_keeps_every_operation_in_order() {
        let events = [
            event(0, 1, add("ada"), None),
            event(0, 2, remove("ada"), Some("e2")),
            event(0, 3, add("ada"), None),
        ];
        let entries = combine(&events);
        let order: Vec<(i64, &str)> = entries
            .iter()
            .map(|e| (e.first_offset, e.operation))
            .collect();
        assert_eq!(order, [(1, "add"), (2, "remove"), (3, "add")]);
        assert_eq!(one_per_event(&events).len(), 3);
    }
}
