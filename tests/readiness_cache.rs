//! `/ready` does not ask the database and Redis on every call: one round of dependency
//! checks answers the probes of the next second (`readiness_checks_total` counts rounds).
//! Alone in its file, so the counter is this test's own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Instant;

use common::{Backend, TestApp};

#[tokio::test]
async fn a_probe_storm_costs_one_check_a_second() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let before = common::metric(&app.metrics().await, "readiness_checks_total");
    let started = Instant::now();
    for _ in 0..50 {
        let r = app.client.get(app.url("/ready")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = common::metric(&app.metrics().await, "readiness_checks_total");
    assert!(after >= 1.0, "no check ever ran");
    let rounds = after - before;
    assert!(
        rounds <= seconds.ceil() + 1.0,
        "{rounds} rounds of checks for 50 probes in {seconds:.2} s"
    );
    // Draining is never cached: it shows at once.
    let mut app = app;
    app.begin_shutdown();
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = app.client.get(app.url("/ready")).send().await.unwrap();
        if r.status() == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "draining did not show");
    }
    app.join().await.unwrap();
}
