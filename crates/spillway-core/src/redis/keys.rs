//! The key shapes of DESIGN.md, in one place: every store builds its keys here. Each
//! key a script touches together shares one hash tag (`{...}`), so Redis Cluster keeps them
//! on one slot.

/// The key shapes of DESIGN.md, behind an optional prefix (outside the hash tag) that lets
/// tests share one Redis.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// `{c:<namespace>:<entity_id>}`: a counter's value, applied offset and version.
    pub fn counter(&self, namespace: &str, entity_id: &str) -> String {
        format!("{}{{c:{namespace}:{entity_id}}}", self.prefix)
    }

    /// `{c:<namespace>:<entity_id>}:m`: a distinct counter's members.
    pub fn counter_members(&self, namespace: &str, entity_id: &str) -> String {
        format!("{}:m", self.counter(namespace, entity_id))
    }

    /// `{c:<namespace>:<entity_id>}:e`: the ids of the events a counter applied within its
    /// dedupe window (a sorted set by the time each was recorded).
    pub fn counter_event_ids(&self, namespace: &str, entity_id: &str) -> String {
        format!("{}:e", self.counter(namespace, entity_id))
    }

    /// `{c:<namespace>:<entity_id>}:load:<part>`: where a counter's members (`m`) or event ids
    /// (`e`) are staged while it is loaded from the database.
    pub fn counter_loading(&self, namespace: &str, entity_id: &str, part: &str) -> String {
        format!("{}:load:{part}", self.counter(namespace, entity_id))
    }

    /// `{c:<namespace>:<entity_id>}:idem:<key>`: an Idempotency-Key used on a counter.
    pub fn counter_idempotency(&self, namespace: &str, entity_id: &str, key: &str) -> String {
        format!("{}:idem:{key}", self.counter(namespace, entity_id))
    }

    /// `spillway:counter:epoch`: changes whenever the counter service finds Redis emptied.
    pub fn counter_epoch(&self) -> String {
        self.other("spillway:counter:epoch")
    }

    /// `{w:<sink>:<id>}`: a write acknowledged but not yet committed.
    pub fn pending_write(&self, sink: &str, id: &str) -> String {
        format!("{}{{w:{sink}:{id}}}", self.prefix)
    }

    /// `{p:<template_id>}`: the ids of a template's ready copies, oldest at the right.
    pub fn template_pool(&self, template_id: &str) -> String {
        format!("{}{{p:{template_id}}}", self.prefix)
    }

    /// `{p:<template_id>}:r`: the records of the copies in the pool, by copy id.
    pub fn template_pool_records(&self, template_id: &str) -> String {
        format!("{}:r", self.template_pool(template_id))
    }

    /// `{p:<template_id>}:t`: copies handed out whose database row may still say ready.
    pub fn template_pool_taken(&self, template_id: &str) -> String {
        format!("{}:t", self.template_pool(template_id))
    }

    /// `{q:<queue>}:<part>`: one of a waiting room's keys (see `lua/queue_admit.lua`).
    pub fn queue(&self, queue: &str, part: &str) -> String {
        format!("{}{{q:{queue}}}:{part}", self.prefix)
    }

    /// `{v:<view>:<key>}`: a view's cached result (`:l` its reload lock, `:g` its
    /// generation); all carry a TTL.
    pub fn view(&self, view: &str, key: &str) -> String {
        format!("{}{{v:{view}:{key}}}", self.prefix)
    }

    /// Any other key of this deployment, under the same prefix.
    pub fn other(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shapes are part of the product (DESIGN.md, docs/architecture.md): changing one
    /// strands the data of a running deployment.
    #[test]
    fn every_key_shape_is_pinned() {
        let keys = Keys::new("t1:");
        let shapes = [
            (keys.counter("video-likes", "v1"), "t1:{c:video-likes:v1}"),
            (
                keys.counter_members("video-likes", "v1"),
                "t1:{c:video-likes:v1}:m",
            ),
            (
                keys.counter_event_ids("video-views", "v1"),
                "t1:{c:video-views:v1}:e",
            ),
            (
                keys.counter_loading("video-views", "v1", "e"),
                "t1:{c:video-views:v1}:load:e",
            ),
            (
                keys.counter_idempotency("video-views", "v1", "k1"),
                "t1:{c:video-views:v1}:idem:k1",
            ),
            (keys.counter_epoch(), "t1:spillway:counter:epoch"),
            (keys.pending_write("playlists", "x"), "t1:{w:playlists:x}"),
            (keys.template_pool("tpl"), "t1:{p:tpl}"),
            (keys.template_pool_records("tpl"), "t1:{p:tpl}:r"),
            (keys.template_pool_taken("tpl"), "t1:{p:tpl}:t"),
            (keys.queue("concert-1", "w"), "t1:{q:concert-1}:w"),
            (
                keys.view("member-playlists", "ada"),
                "t1:{v:member-playlists:ada}",
            ),
        ];
        for (key, expected) in shapes {
            assert_eq!(key, expected);
        }
    }
}
