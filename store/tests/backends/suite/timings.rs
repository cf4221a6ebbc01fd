//! The append timing report (ignored by default).

use super::*;

/// Appends batches of 1, 16 and 128 new answers, one batch in flight, then batches of 1 with
/// eight in flight, and prints latency per batch and per answer, next to a baseline (a plain
/// one-row upsert) for the ratio. A report, not a test: no assertion on time.
pub(crate) async fn append_timings(b: &Backend) {
    let id = created(b, 1).await;
    let mut next_question = 0u32;
    let mut batch_of = |size: u32| -> Vec<AnswerRecord> {
        next_question += 1;
        (1..=size)
            .map(|p| answer(&id, p, next_question, &format!("p{p}-q{next_question}")))
            .collect()
    };
    // The baseline: one durable single-row upsert with no transaction around it.
    let set = QuestionSet {
        id: "baseline".into(),
        title: "baseline".into(),
        description: None,
        questions: vec![],
    };
    let mut took = Vec::new();
    for now in 0..300 {
        let start = Instant::now();
        let access = quiz_store::SetAccess::private("host");
        let stored = b.stores.content.put_question_set(&set, &access, false, now);
        stored.await.unwrap();
        took.push(start.elapsed());
    }
    report(b.name, "baseline: one-row upsert ", 1, &mut took);

    for (size, rounds) in [(1u32, 300usize), (16, 100), (128, 30)] {
        let mut took = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let batch = batch_of(size);
            let start = Instant::now();
            let outcomes = b.stores.answers.append(Epoch::FIRST, &batch).await.unwrap();
            took.push(start.elapsed());
            assert!(outcomes.iter().all(|o| *o == Appended::Inserted));
        }
        report(
            b.name,
            &format!("batch {size:>3}, 1 in flight"),
            size,
            &mut took,
        );
    }

    let batches: Vec<Vec<AnswerRecord>> = (0..400).map(|_| batch_of(1)).collect();
    let mut chunks = batches.chunks(50);
    let wall = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mine: Vec<Vec<AnswerRecord>> = chunks.next().unwrap().to_vec();
        let log = b.stores.answers.clone();
        tasks.push(tokio::spawn(async move {
            let mut took = Vec::new();
            for batch in mine {
                let start = Instant::now();
                log.append(Epoch::FIRST, &batch).await.unwrap();
                took.push(start.elapsed());
            }
            took
        }));
    }
    let mut took = Vec::new();
    for task in tasks {
        took.extend(task.await.unwrap());
    }
    let wall = wall.elapsed();
    report(b.name, "batch   1, 8 in flight", 1, &mut took);
    println!(
        "{}: 8 in flight: {} answers in {wall:.2?} = {:.0} answers/s",
        b.name,
        took.len(),
        took.len() as f64 / wall.as_secs_f64()
    );
}

fn report(backend: &str, label: &str, size: u32, took: &mut [Duration]) {
    took.sort();
    let pct = |p: f64| took[((took.len() - 1) as f64 * p).round() as usize];
    let mean = took.iter().sum::<Duration>() / took.len() as u32;
    println!(
        "{backend} {label}: mean {mean:.2?}  p50 {:.2?}  p99 {:.2?}  max {:.2?}  per answer {:.1} µs",
        pct(0.5),
        pct(0.99),
        pct(1.0),
        mean.as_secs_f64() * 1e6 / f64::from(size)
    );
}
