//! Per-shard progress of one stream, kept in a JSON file so that a restarted event source
//! mapping resumes after the last acknowledged record instead of skipping to `LATEST`.
//!
//! Written to a temporary file and renamed over the old one, so a crash mid-write leaves the
//! previous checkpoint, never a torn one.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Progress in one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCheckpoint {
    /// Last record acknowledged by the relay (or filtered out); reading resumes after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<String>,
    /// The shard is closed and fully read: its children may start.
    #[serde(default)]
    pub finished: bool,
}

/// Progress in one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The stream this belongs to; a table re-created under the same name has a new stream, and
    /// the old progress then means nothing.
    pub stream_arn: String,
    /// Progress by shard id.
    #[serde(default)]
    pub shards: BTreeMap<String, ShardCheckpoint>,
}

/// Where a stream's checkpoint lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointFile {
    /// `<dir>/<table>.checkpoint.json`.
    path: PathBuf,
}

impl CheckpointFile {
    /// The checkpoint of `table`'s stream under `dir`.
    #[must_use]
    pub fn new(dir: &Path, table: &str) -> Self {
        let name: String = table
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            path: dir.join(format!("{name}.checkpoint.json")),
        }
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved checkpoint of `stream_arn`; `None` when there is none, or it belongs to another
    /// stream, or it cannot be read (then it is logged and ignored: replaying is safe, invalidations
    /// are idempotent).
    pub async fn load(&self, stream_arn: &str) -> Option<Checkpoint> {
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return None,
            Err(err) => {
                tracing::warn!(path = %self.path.display(), error = %err, "cannot read checkpoint; starting afresh");
                return None;
            }
        };
        match serde_json::from_str::<Checkpoint>(&text) {
            Ok(checkpoint) if checkpoint.stream_arn == stream_arn => Some(checkpoint),
            Ok(checkpoint) => {
                tracing::info!(path = %self.path.display(), old = %checkpoint.stream_arn, new = %stream_arn,
                    "checkpoint belongs to an older stream of this table; starting afresh");
                None
            }
            Err(err) => {
                tracing::warn!(path = %self.path.display(), error = %err, "corrupt checkpoint; starting afresh");
                None
            }
        }
    }

    /// Replaces the saved checkpoint.
    ///
    /// # Errors
    /// The I/O error of writing or renaming.
    pub async fn save(&self, checkpoint: &Checkpoint) -> io::Result<()> {
        let text = serde_json::to_vec_pretty(checkpoint).map_err(io::Error::other)?;
        let temporary = self.path.with_extension("json.tmp");
        tokio::fs::write(&temporary, text).await?;
        tokio::fs::rename(&temporary, &self.path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("staleless-checkpoint-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[tokio::test]
    async fn a_saved_checkpoint_loads_for_its_stream_only() {
        let dir = scratch_dir();
        let file = CheckpointFile::new(&dir, "p-users");
        assert_eq!(file.load("arn:1").await, None);
        let checkpoint = Checkpoint {
            stream_arn: "arn:1".into(),
            shards: BTreeMap::from([(
                "shard-0".to_owned(),
                ShardCheckpoint {
                    sequence_number: Some("42".into()),
                    finished: true,
                },
            )]),
        };
        file.save(&checkpoint).await.expect("save");
        assert_eq!(file.load("arn:1").await, Some(checkpoint));
        assert_eq!(
            file.load("arn:2").await,
            None,
            "a re-created table's stream starts afresh"
        );
        std::fs::write(file.path(), "{torn").expect("write");
        assert_eq!(file.load("arn:1").await, None, "a corrupt file is ignored");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn file_names_are_safe() {
        let file = CheckpointFile::new(Path::new("/d"), "a/b:c");
        assert_eq!(file.path(), Path::new("/d/a_b_c.checkpoint.json"));
    }
}
