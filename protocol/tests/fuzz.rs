//! Fuzzing on the stable toolchain: arbitrary and mutated bytes into every decoder a peer can
//! reach (client frames, cluster frames, question-set imports). Each must answer with a
//! value or an error, never panic, hang or allocate without bound.
//!
//! `QUIZ_FUZZ_CASES` sets the cases per target (default 2,000, about a second in all); the
//! long run is `QUIZ_FUZZ_CASES=1000000 cargo test --release -p quiz-protocol --test fuzz`.
//! A failing input is printed, shrunk, by proptest; it then becomes a test of its own below.

use proptest::prelude::*;
use quiz_protocol::QuestionSet;
use quiz_protocol::client::{DEFAULT_MAX_FRAME, decode_client};
use quiz_protocol::cluster::{CLUSTER_VERSION, ClusterMessage, DEFAULT_MAX_CLUSTER_FRAME};
use quiz_protocol::cluster::{decode_frame, encode_frame};

fn cases() -> u32 {
    std::env::var("QUIZ_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        // Found inputs are kept as tests in this file, not in a side directory.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Valid client frames of every type, to mutate.
const CLIENT_FRAMES: &[&str] = &[
    r#"{"type":"join","last_seq":12}"#,
    r#"{"type":"answer","question":3,"answer_id":"a-1","choice":2}"#,
    r#"{"type":"answer","question":1,"answer_id":"a-2","choices":[0,2]}"#,
    r#"{"type":"answer","question":2,"answer_id":"a-3","value":true}"#,
    r#"{"type":"answer","question":4,"answer_id":"a-4","text":"went"}"#,
    r#"{"type":"answer","question":5,"answer_id":"a-5","order":[2,0,1]}"#,
    r#"{"type":"answer","question":6,"answer_id":"a-6","pairs":[[0,1],[1,0]]}"#,
    r#"{"type":"host","command":"kick","player":"p-1","ref":"k"}"#,
    r#"{"type":"next","ref":"n"}"#,
    r#"{"type":"ping","ref":"x"}"#,
    r#"{"type":"leave"}"#,
];

/// `bytes` with some of its bytes replaced, inserted or cut, as `edits` says.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, op, value) in edits {
        if bytes.is_empty() {
            bytes.push(value);
            continue;
        }
        let at = at % bytes.len();
        match op % 3 {
            0 => bytes[at] = value,
            1 => bytes.insert(at, value),
            _ => {
                bytes.remove(at);
            }
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn client_frames_of_random_bytes_decode_or_fail(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
    ) {
        let _ = decode_client(&bytes, DEFAULT_MAX_FRAME);
    }

    #[test]
    fn mutated_client_frames_decode_or_fail(
        which in 0..CLIENT_FRAMES.len(),
        edits in edits(),
    ) {
        let bytes = mutate(CLIENT_FRAMES[which].as_bytes().to_vec(), &edits);
        let _ = decode_client(&bytes, DEFAULT_MAX_FRAME);
    }

    #[test]
    fn cluster_frames_of_random_bytes_decode_or_fail(
        body in prop::collection::vec(any::<u8>(), 0..4096),
        whole in any::<bool>(),
    ) {
        // A well-formed header and version, so the bytes reach the bincode decoder.
        let len = if whole { body.len() + 1 } else { body.len() / 2 + 1 };
        let mut frame = (len as u32).to_be_bytes().to_vec();
        frame.push(CLUSTER_VERSION);
        frame.extend_from_slice(&body);
        let _ = decode_frame::<ClusterMessage>(&frame, DEFAULT_MAX_CLUSTER_FRAME);
        let _ = decode_frame::<ClusterMessage>(&body, DEFAULT_MAX_CLUSTER_FRAME);
    }

    #[test]
    fn mutated_cluster_frames_decode_or_fail(edits in edits(), hello in any::<bool>()) {
        let message = if hello {
            ClusterMessage::Hello { node: quiz_protocol::NodeId("node-1".into()), cluster: "quiz".into() }
        } else {
            ClusterMessage::Ring { epoch: 3, members: Vec::new() }
        };
        let valid = encode_frame(&message);
        let bytes = mutate(valid, &edits);
        let _ = decode_frame::<ClusterMessage>(&bytes, DEFAULT_MAX_CLUSTER_FRAME);
    }

    #[test]
    fn question_sets_of_random_text_import_or_fail(text in ".{0,2048}") {
        let _ = QuestionSet::from_json(&text);
    }

    #[test]
    fn mutated_question_sets_import_or_fail(edits in edits()) {
        let demo = include_bytes!("../../content/demo.json").to_vec();
        let bytes = mutate(demo, &edits);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = QuestionSet::from_json(text);
        }
    }
}
