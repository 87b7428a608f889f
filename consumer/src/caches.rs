//! The caches a subscriber keeps fresh, registered by source through [`Evict`].

use std::sync::Arc;

use staleless_protocol::{Invalidation, KeyVersion};

/// A cache that invalidation messages evict from.
pub trait Evict: Send + Sync {
    /// Evicts what the changed `keys` of the cache's source spoil; returns how many keys.
    fn evict(&self, keys: &[KeyVersion]) -> usize;
    /// Evicts everything: messages may have been lost.
    fn flush(&self);
}

/// The caches of a service, each registered for the source whose changes it holds.
#[derive(Clone, Default)]
pub struct Caches {
    /// `(source, cache)`: a source may feed several caches.
    by_source: Vec<(String, Arc<dyn Evict>)>,
    /// Caches flushed only when everything is (an operator's flush of every source): derived
    /// state no single source owns, such as verified tokens.
    with_everything: Vec<Arc<dyn Evict>>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sources: Vec<&str> = self.by_source.iter().map(|(source, _)| source.as_str()).collect();
        formatter
            .debug_struct("Caches")
            .field("sources", &sources)
            .field("with_everything", &self.with_everything.len())
            .finish()
    }
}

impl Caches {
    /// No caches yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `cache` for the changes of `source`.
    #[must_use]
    pub fn register(mut self, source: &str, cache: Arc<dyn Evict>) -> Self {
        self.by_source.push((source.to_owned(), cache));
        self
    }

    /// Registers `cache` to be flushed when every source is flushed by a message.
    #[must_use]
    pub fn register_with_everything(mut self, cache: Arc<dyn Evict>) -> Self {
        self.with_everything.push(cache);
        self
    }

    /// Applies one message: evicts the keys of an invalidation from its source's caches, or
    /// flushes what a flush names. Returns the keys evicted. Ticks change no cache.
    pub fn apply(&self, invalidation: &Invalidation) -> usize {
        match invalidation {
            Invalidation::Invalidate { source, keys } => self
                .of(source.as_str())
                .map(|cache| cache.evict(keys))
                .max()
                .unwrap_or(0),
            Invalidation::FlushAll {
                source: Some(source), ..
            } => {
                self.flush_source(source.as_str());
                0
            }
            Invalidation::FlushAll { source: None, .. } => {
                self.flush_sources();
                for cache in &self.with_everything {
                    cache.flush();
                }
                0
            }
            Invalidation::Tick { .. } => 0,
        }
    }

    fn of<'a>(&'a self, source: &'a str) -> impl Iterator<Item = &'a Arc<dyn Evict>> + 'a {
        self.by_source
            .iter()
            .filter(move |(of, _)| of == source)
            .map(|(_, cache)| cache)
    }

    /// Flushes every cache of `source`.
    pub fn flush_source(&self, source: &str) {
        for cache in self.of(source) {
            cache.flush();
        }
    }

    /// Flushes the caches of every source (messages may have been lost).
    pub fn flush_sources(&self) {
        for (_, cache) in &self.by_source {
            cache.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use staleless_protocol::Source;

    use super::*;

    #[derive(Default)]
    struct Recorder {
        events: Mutex<Vec<String>>,
    }

    impl Evict for Recorder {
        fn evict(&self, keys: &[KeyVersion]) -> usize {
            let mut events = self.events.lock().expect("lock");
            events.extend(keys.iter().map(|key| format!("evict {}", key.id)));
            keys.len()
        }

        fn flush(&self) {
            self.events.lock().expect("lock").push("flush".to_owned());
        }
    }

    fn events(recorder: &Recorder) -> Vec<String> {
        std::mem::take(&mut *recorder.events.lock().expect("lock"))
    }

    #[test]
    fn messages_reach_the_caches_of_their_source_and_a_full_flush_reaches_every_cache() {
        let (users, roles, tokens) = (
            Arc::new(Recorder::default()),
            Arc::new(Recorder::default()),
            Arc::new(Recorder::default()),
        );
        let caches = Caches::new()
            .register("users", users.clone())
            .register("roles", roles.clone())
            .register_with_everything(tokens.clone());
        let key = KeyVersion {
            id: "u-1".to_owned(),
            seq: "1".into(),
            at_ms: 0,
        };
        let evicted = caches.apply(&Invalidation::Invalidate {
            source: Source::USERS,
            keys: vec![key],
        });
        assert_eq!(evicted, 1);
        assert_eq!(events(&users), ["evict u-1"]);
        assert!(events(&roles).is_empty() && events(&tokens).is_empty());

        caches.flush_sources();
        assert_eq!(
            (events(&users), events(&roles)),
            (vec!["flush".to_owned()], vec!["flush".to_owned()])
        );
        assert!(
            events(&tokens).is_empty(),
            "lost messages spoil sources, not verified tokens"
        );

        caches.apply(&Invalidation::FlushAll {
            source: None,
            reason: None,
        });
        assert_eq!(events(&tokens), ["flush"]);
    }
}
