//! The history of a chaos run: every answer a phone sent and what came of it, every fault and
//! when, and what each phone was shown at the end. One JSON object per line, written as the
//! run goes, so a run that dies still leaves what it saw; [`crate::check`] reads it back.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use quiz_protocol::{AnswerId, QuizId};
use serde::{Deserialize, Serialize};

/// One line of a history file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// The first line: what ran, and where its stores and router were (for a later check).
    Run {
        scenario: String,
        seed: u64,
        /// PostgreSQL, as the checker reaches it (not through a fault proxy).
        database_url: String,
        redis_nodes: Vec<String>,
        router_url: String,
    },
    /// A quiz of the run and the phones in it.
    Quiz { quiz: QuizId, phones: u32 },
    /// A fault began (`what`) or ended (`healed`), `at_ms` after the run started.
    Fault {
        at_ms: u64,
        what: String,
        healed: bool,
    },
    /// One answer: sent at `sent_ms`, settled at `settled_ms` (both from the run's start).
    Answer {
        quiz: QuizId,
        phone: String,
        question: u32,
        answer_id: AnswerId,
        sent_ms: u64,
        settled_ms: u64,
        outcome: Outcome,
    },
    /// What a phone was shown once its quiz ended; `None` fields if it never saw the end.
    Final {
        quiz: QuizId,
        phone: String,
        /// The nickname the server gave it (with any suffix).
        nickname: String,
        score: Option<u32>,
        /// The final top N as (nickname, score).
        top: Option<Vec<(String, u32)>>,
    },
}

/// What a phone learned of one answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "is", rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged with these points: it must be in the log exactly once, with them.
    Ack { points: u32 },
    /// Definitely refused (`too_late`, ...): it must not be in the log.
    Refused { code: String },
    /// Neither before the phone gave up: it may or may not count.
    Unknown { error: String },
}

/// Appends records to a history file; cheap to clone and share between phones.
#[derive(Clone)]
pub struct HistoryWriter {
    file: Arc<Mutex<std::io::BufWriter<std::fs::File>>>,
    started: Instant,
}

impl HistoryWriter {
    pub fn create(path: &Path) -> anyhow::Result<HistoryWriter> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(HistoryWriter {
            file: Arc::new(Mutex::new(std::io::BufWriter::new(file))),
            started: Instant::now(),
        })
    }

    /// Milliseconds since the history was created.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn record(&self, record: &Record) {
        let line = serde_json::to_string(record).expect("a record serializes");
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // A full disk loses history lines; the check then reports the answers as unknown.
        let _ = writeln!(file, "{line}");
    }

    pub fn flush(&self) -> anyhow::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.flush()?;
        Ok(())
    }
}

/// Reads a history file; a line that does not parse is an error naming it.
pub fn read(path: &Path) -> anyhow::Result<Vec<Record>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut records = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not a history record", path.display(), n + 1))?;
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let writer = HistoryWriter::create(&path).unwrap();
        let records = vec![
            Record::Quiz {
                quiz: QuizId::parse("K7M3QX").unwrap(),
                phones: 2,
            },
            Record::Answer {
                quiz: QuizId::parse("K7M3QX").unwrap(),
                phone: "p1".into(),
                question: 0,
                answer_id: AnswerId::parse("a-1").unwrap(),
                sent_ms: 5,
                settled_ms: 9,
                outcome: Outcome::Ack { points: 900 },
            },
        ];
        for r in &records {
            writer.record(r);
        }
        writer.flush().unwrap();
        assert_eq!(read(&path).unwrap(), records);
    }

    #[test]
    fn a_line_that_is_not_a_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        std::fs::write(
            &path,
            "{\"kind\":\"quiz\",\"quiz\":\"K7M3QX\",\"phones\":1}\nnope\n",
        )
        .unwrap();
        let e = read(&path).unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
    }
}
