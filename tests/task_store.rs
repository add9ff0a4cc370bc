//! Conformance of the task queue storage (DESIGN §5) on SQLite and PostgreSQL: claim
//! order, disjoint concurrent claims, lease fencing, rescue, idempotency, cancel,
//! approval, sessions, memory and schedule fires; fairness between tenants (ADR 0008).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use common::{Backend, TestDb, hire};
use digital_employee::store::*;
use serde_json::json;
use uuid::Uuid;

backend_tests!(
    claim_orders_by_priority_then_age_and_respects_run_at,
    concurrent_claims_never_share_a_task,
    late_completion_is_rejected_after_rescue,
    rescue_fails_a_task_whose_attempts_are_used,
    idempotency_key_returns_the_existing_task,
    cancel_queued_running_and_finished,
    approval_resumes_a_waiting_task,
    sessions_memory_and_schedule_fires,
    step_events_keep_order_and_are_fenced,
    a_claim_can_carry_the_employee,
    due_schedules_are_shared_fairly_between_tenants,
    one_tenant_cannot_starve_another,
    tenant_max_running_holds_across_concurrent_claimers,
    a_subtask_is_claimed_past_its_tenants_cap,
    sessions_are_scoped_by_tenant,
    concurrent_submits_and_ends_each_get_their_own_answer,
    a_bad_write_does_not_fail_the_writes_beside_it,
    a_task_end_writes_its_session_turn_in_the_same_write,
    a_task_goes_only_to_an_employee_of_its_tenant,
);

fn new_task(employee: Uuid, priority: i32) -> NewTask {
    NewTask {
        tenant_id: DEFAULT_TENANT_ID,
        employee: TaskEmployee::Id(employee),
        input: json!("hello"),
        priority,
        run_at: now(),
        max_attempts: 3,
        idempotency_key: None,
        request_hash: None,
        parent_task_id: None,
        depth: 0,
        session_id: None,
        callback_url: None,
        metadata: json!({}),
        output_schema: None,
        trace_context: None,
    }
}

const LEASE: Duration = Duration::from_secs(30);

async fn claim_orders_by_priority_then_age_and_respects_run_at(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let s = db.migrated_store().await;
    let e = hire(&s, DEFAULT_TENANT_ID).await;
    let (low, _) = s.create_task(&new_task(e, 0)).await.unwrap();
    let (high, _) = s.create_task(&new_task(e, 5)).await.unwrap();
    let (low2, _) = s.create_task(&new_task(e, 0)).await.unwrap();
    let mut later = new_task(e, 9);
    later.run_at = now() + chrono::Duration::hours(1);
    let (future, _) = s.create_task(&later).await.unwrap();

    let got = s.claim_tasks("w1", 2, LEASE, 0).await.unwrap();
    assert_eq!(
        got.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![high.id, low.id]
    );
    assert!(got.iter().all(|t| t.status == TaskStatus::Running
        && t.attempt == 1
        && t.lease_owner.as_deref() == Some("w1")
        && t.lease_expires_at.is_some()));
    let got = s.claim_tasks("w1", 10, LEASE, 0).await.unwrap();
    assert_eq!(got.iter().map(|t| t.id).collect::<Vec<_>>(), vec![low2.id]);
    assert!(s.claim_tasks("w1", 10, LEASE, 0).await.unwrap().is_empty());
    let f = s.get_task(DEFAULT_TENANT_ID, future.id).await.unwrap();
    assert_eq!(f.status, TaskStatus::Queued, "not due yet");
    let ev = s.list_events(high.id, 0, 100).await.unwrap();
    assert_eq!(ev.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(ev[1].payload["status"], "running");
}

/// A step's events get consecutive `seq` in the order given; a writer without the lease
/// adds none; a finish carries the last step's usage and events in the same write.
async fn step_events_keep_order_and_are_fenced(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let s = db.migrated_store().await;
    let (t, _) = s
        .create_task(&new_task(hire(&s, DEFAULT_TENANT_ID).await, 0))
        .await
        .unwrap();
    let lease = s.claim_tasks("w1", 1, LEASE, 0).await.unwrap()[0]
        .lease()
        .unwrap();
    let kinds = ["llm_call", "tool_call", "tool_call", "message"];
    let step = StepUpdate {
        tokens_in: 10,
        tokens_out: 5,
        cost_nanos: 7,
        steps: 1,
        events: kinds
            .iter()
            .enumerate()
            .map(|(i, k)| NewEvent::new(k, json!({"i": i, "text": "ünï \"q\" 1e-7"})))
            .collect(),
    };
    assert_eq!(s.record_step(&lease, &step).await.unwrap(), Some(false));
    let stranger = Lease {
        owner: "w2".into(),
        ..lease.clone()
    };
    assert_eq!(s.record_step(&stranger, &step).await.unwrap(), None);
    assert!(
        !s.finish_task(
            &stranger,
            &Finish {
                status: TaskStatus::Failed,
                result: None,
                error: Some("not mine".into()),
                run_at: None,
                step: step.clone(),
                messages: Vec::new(),
            }
        )
        .await
        .unwrap()
    );
    let mut last = step.clone();
    last.events
        .push(NewEvent::status(TaskStatus::Succeeded, json!({})));
    let fin = Finish {
        status: TaskStatus::Succeeded,
        result: Some(json!({"output": "done"})),
        error: None,
        run_at: None,
        step: last,
        messages: Vec::new(),
    };
    assert!(s.finish_task(&lease, &fin).await.unwrap());
    let ev = s.list_events(t.id, 0, 100).await.unwrap();
    assert_eq!(
        ev.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=11).collect::<Vec<i64>>(),
        "queued, running, 4 step events, 4 finish step events + status"
    );
    let got: Vec<&str> = ev[2..6].iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(got, kinds);
    assert_eq!(ev[3].payload, json!({"i": 1, "text": "ünï \"q\" 1e-7"}));
    assert_eq!(ev[10].payload["status"], "succeeded");
    let t = s.get_task(DEFAULT_TENANT_ID, t.id).await.unwrap();
    assert_eq!(
        (t.tokens_in, t.tokens_out, t.cost_nanos, t.steps),
        (20, 10, 14, 2)
    );
    // A refused write (an unknown tenant has no employees) changes nothing and leaves
    // the store usable for the next write.
    let mut orphan = new_task(hire(&s, DEFAULT_TENANT_ID).await, 0);
    orphan.tenant_id = Uuid::now_v7();
    assert!(s.create_task(&orphan).await.is_err());
    assert!(s.create_task(&orphan).await.is_err());
    let (t2, _) = s
        .create_task(&new_task(hire(&s, DEFAULT_TENANT_ID).await, 0))
        .await
        .unwrap();
    assert_eq!(s.list_events(t2.id, 0, 10).await.unwrap().len(), 1);
}

/// Each claimed task's employee is read with the claim (PostgreSQL: in its statement;
/// SQLite: in its transaction); it must equal the stored employee (and be absent when the
/// employee is gone).
async fn a_claim_can_carry_the_employee(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let s = db.migrated_store().await;
    let e = s
        .create_employee(
            DEFAULT_TENANT_ID,
            &EmployeeFields {
                name: "carried".into(),
                role: "tester".into(),
                instructions: "be brief".into(),
                model_policy: vec!["sandbox/sandbox-1".into(), "openai/gpt-4o".into()],
                allowed_tools: vec!["calculator".into()],
                max_steps: 7,
                token_budget: 1234,
                temperature: 0.25,
                redact_prompts: true,
                approval_tools: vec!["calculator".into()],
                output_schema: None,
                input_timeout_seconds: 86_400,
            },
        )
        .await
        .unwrap();
    s.create_task(&new_task(e.id, 1)).await.unwrap();
    let gone = hire(&s, DEFAULT_TENANT_ID).await;
    s.create_task(&new_task(gone, 0)).await.unwrap();
    s.delete_employee(DEFAULT_TENANT_ID, gone, None)
        .await
        .unwrap();
    let got = s
        .claim_tasks_with_employees("w1", 10, LEASE, 0)
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0.employee_id, e.id, "priority order kept");
    assert_eq!(got[0].1.as_ref(), Some(&e));
    assert_eq!(got[1].1, None, "no such employee");
}

async fn concurrent_claims_never_share_a_task(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let s = db.migrated_store().await;
    let e = hire(&s, DEFAULT_TENANT_ID).await;
    for _ in 0..60 {
        s.create_task(&new_task(e, 0)).await.unwrap();
    }
    let mut handles = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = s.claim_tasks(&format!("w{w}"), 3, LEASE, 0).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|t| t.id));
            }
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 60, "every task claimed once");
    assert_eq!(unique.len(), 60, "no task claimed twice");
}

async fn late_completion_is_rejected_after_rescue(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let s = db.migrated_store().await;
    let (t, _) = s
        .create_task(&new_task(hire(&s, DEFAULT_TENANT_ID).await, 0))
        .await
        .unwrap();
    let a = s.claim_tasks("a", 1, Duration::ZERO, 0).await.unwrap();
    let lease_a = a[0].lease().unwrap();
    // The lease of `a` has expired: the reaper rescues the task.
    let rescued = s.rescue_expired(&|_| Duration::ZERO).await.unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].status, TaskStatus::Retrying);
    assert_eq!(s.renew_lease(&lease_a, LEASE).await.unwrap(), None);
    let b = s.claim_tasks("b", 1, LEASE, 0).await.unwrap();
    assert_eq!(b[0].id, t.id);
    assert_eq!(b[0].attempt, 2);
    let lease_b = b[0].lease().unwrap();
    assert_eq!(s.renew_lease(&lease_b, LEASE).await.unwrap(), Some(false));

    let done = |who: &str| Finish {
        status: TaskStatus::Succeeded,
        result: Some(json!({"by": who})),
        error: None,
        run_at: None,
        step: StepUpdate {
            tokens_in: 1,
            events: vec![NewEvent::status(TaskStatus::Succeeded, json!({"by": who}))],
            ..StepUpdate::default()
        },
        messages: Vec::new(),
    };
    assert!(
        s.record_step(&lease_a, &StepUpdate::default())
            .await
            .unwrap()
            .is_none()
    );
    assert!(!s.finish_task(&lease_a, &done("a")).await.unwrap());
    assert!(s.finish_task(&lease_b, &done("b")).await.unwrap());
    assert!(
        !s.finish_task(&lease_b, &done("b")).await.unwrap(),
        "exactly once"
    );
    let t = s.get_task(DEFAULT_TENANT_ID, t.id).await.unwrap();
    assert_eq!(t.status, TaskStatus::Succeeded);
    assert_eq!(t.result, Some(json!({"by": "b"})));
    assert_eq!(t.tokens_in, 1);
    assert!(t.finished_at.is_some() && t.lease_owner.is_none());
    let ev = s.list_events(t.id, 0, 100).await.unwrap();
    let seqs: Vec<i64> = ev.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=ev.len() as i64).collect::<Vec<_>>());
    assert_eq!(ev.last().unwrap().payload["by"], "b");
    assert_eq!(s.list_events(t.id, 3, 100).await.unwrap()[0].seq, 4);
}

async fn rescue_fails_a_task_whose_attempts_are_used(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let s = db.migrated_store().await;
    let mut n = new_task(hire(&s, DEFAULT_TENANT_ID).await, 0);
    n.max_attempts = 1;
    let (t, _) = s.create_task(&n).await.unwrap();
    s.claim_tasks("a", 1, Duration::ZERO, 0).await.unwrap();
    let r = s.rescue_expired(&|_| Duration::ZERO).await.unwrap();
    assert_eq!(r[0].status, TaskStatus::Failed);
    let t = s.get_task(DEFAULT_TENANT_ID, t.id).await.unwrap();
    assert_eq!(t.status, TaskStatus::Failed);
    assert!(t.error.unwrap().contains("attempts"));
    assert!(s.claim_tasks("b", 1, LEASE, 0).await.unwrap().is_empty());
}

async fn idempotency_key_returns_the_existing_task(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let s = db.migrated_store().await;
    let other = s.create_tenant("other").await.unwrap();
    let mut n = new_task(hire(&s, DEFAULT_TENANT_ID).await, 0);
    n.idempotency_key = Some("k1".into());
    n.request_hash = Some("h1".into());
    let (a, created) = s.create_task(&n).await.unwrap();
    assert!(created);
    n.request_hash = Some("h2".into());
    let (b, created) = s.create_task(&n).await.unwrap();
    assert!(!created);
    assert_eq!(b.id, a.id);
    assert_eq!(b.request_hash.as_deref(), Some("h1"));
    n.tenant_id = other.id;
    n.employee = TaskEmployee::Id(hire(&s, other.id).await);
    let (c, created) = s.create_task(&n).await.unwrap();
    assert!(created, "keys are per tenant");
    assert_ne!(c.id, a.id);
    assert!(matches!(
        s.get_task(DEFAULT_TENANT_ID, c.id).await,
        Err(StoreError::NotFound)
    ));
}

async fn cancel_queued_running_and_finished(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let s = db.migrated_store().await;
    let e = hire(&s, DEFAULT_TENANT_ID).await;
    let (q, _) = s.create_task(&new_task(e, 0)).await.unwrap();
    assert!(matches!(
        s.cancel_task(DEFAULT_TENANT_ID, q.id).await.unwrap(),
        CancelOutcome::Cancelled(t) if t.status == TaskStatus::Cancelled
    ));
    let (r, _) = s.create_task(&new_task(e, 0)).await.unwrap();
    let claimed = s.claim_tasks("w", 1, LEASE, 0).await.unwrap();
    assert_eq!(claimed[0].id, r.id);
    assert!(matches!(
        s.cancel_task(DEFAULT_TENANT_ID, r.id).await.unwrap(),
        CancelOutcome::Requested(t) if t.cancel_requested && t.status == TaskStatus::Running
    ));
    let lease = claimed[0].lease().unwrap();
    assert_eq!(s.renew_lease(&lease, LEASE).await.unwrap(), Some(true));
    assert_eq!(
        s.record_step(&lease, &StepUpdate::default()).await.unwrap(),
        Some(true)
    );
    assert!(matches!(
        s.cancel_task(DEFAULT_TENANT_ID, q.id).await.unwrap(),
        CancelOutcome::AlreadyFinished(_)
    ));
    assert!(matches!(
        s.cancel_task(DEFAULT_TENANT_ID, Uuid::now_v7()).await,
        Err(StoreError::NotFound)
    ));
}

async fn approval_resumes_a_waiting_task(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let s = db.migrated_store().await;
    let (t, _) = s
        .create_task(&new_task(hire(&s, DEFAULT_TENANT_ID).await, 0))
        .await
        .unwrap();
    let c = s.claim_tasks("w", 1, LEASE, 0).await.unwrap();
    let lease = c[0].lease().unwrap();
    assert!(
        s.resolve_approval(DEFAULT_TENANT_ID, t.id, json!({}))
            .await
            .unwrap()
            .is_none(),
        "not waiting"
    );
    let park = Finish {
        status: TaskStatus::WaitingApproval,
        result: None,
        error: None,
        run_at: None,
        step: StepUpdate::default(),
        messages: Vec::new(),
    };
    assert!(s.finish_task(&lease, &park).await.unwrap());
    let w = s.get_task(DEFAULT_TENANT_ID, t.id).await.unwrap();
    assert_eq!(w.status, TaskStatus::WaitingApproval);
    assert_eq!(w.attempt, 0, "parking gives the attempt back");
    assert!(s.claim_tasks("w", 1, LEASE, 0).await.unwrap().is_empty());
    let r = s
        .resolve_approval(DEFAULT_TENANT_ID, t.id, json!({"decision": "approve"}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, TaskStatus::Queued);
    let again = s.claim_tasks("w2", 1, LEASE, 0).await.unwrap();
    assert_eq!(again[0].id, t.id);
    let ev = s.list_events(t.id, 0, 100).await.unwrap();
    assert!(
        ev.iter()
            .any(|e| e.kind == "approval" && e.payload["decision"] == "approve")
    );
}

async fn sessions_memory_and_schedule_fires(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let s = db.migrated_store().await;
    let e = hire(&s, DEFAULT_TENANT_ID).await;
    let sid = Uuid::now_v7();
    s.ensure_session(DEFAULT_TENANT_ID, sid, e).await.unwrap();
    s.ensure_session(DEFAULT_TENANT_ID, sid, e).await.unwrap();
    assert!(matches!(
        s.ensure_session(DEFAULT_TENANT_ID, sid, Uuid::now_v7())
            .await,
        Err(StoreError::NotFound)
    ));
    let msgs: Vec<SessionMessage> = (0..3)
        .map(|i| SessionMessage {
            id: Uuid::now_v7(),
            session_id: sid,
            role: if i % 2 == 0 { "user" } else { "assistant" }.into(),
            content: format!("m{i}"),
            task_id: None,
            created_at: now(),
        })
        .collect();
    s.append_messages(DEFAULT_TENANT_ID, &msgs).await.unwrap();
    let got = s.list_messages(DEFAULT_TENANT_ID, sid, 2).await.unwrap();
    assert_eq!(
        got.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
        vec!["m1", "m2"]
    );

    assert_eq!(s.memory_get(DEFAULT_TENANT_ID, e, "k").await.unwrap(), None);
    s.memory_set(DEFAULT_TENANT_ID, e, "k", &json!(1))
        .await
        .unwrap();
    s.memory_set(DEFAULT_TENANT_ID, e, "k", &json!({"v": 2}))
        .await
        .unwrap();
    assert_eq!(
        s.memory_get(DEFAULT_TENANT_ID, e, "k").await.unwrap(),
        Some(json!({"v": 2}))
    );
    assert_eq!(
        s.memory_get(DEFAULT_TENANT_ID, Uuid::now_v7(), "k")
            .await
            .unwrap(),
        None
    );

    let fire = now() - chrono::Duration::seconds(1);
    let f = ScheduleFields {
        employee_id: e,
        cron: "* * * * * *".into(),
        timezone: "UTC".into(),
        input: json!("tick"),
        priority: 0,
        enabled: true,
    };
    let sch = s
        .create_schedule(DEFAULT_TENANT_ID, &f, fire)
        .await
        .unwrap();
    let due = s.due_schedules(Utc::now(), 10, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let next = fire + chrono::Duration::minutes(1);
    let (a, b) = tokio::join!(
        s.claim_fire(sch.id, due[0].next_fire_at, next),
        s.claim_fire(sch.id, due[0].next_fire_at, next)
    );
    assert!(
        a.unwrap() ^ b.unwrap(),
        "exactly one scheduler claims a fire"
    );
    assert!(
        s.due_schedules(Utc::now(), 10, 10)
            .await
            .unwrap()
            .is_empty()
    );
    s.delete_schedule(DEFAULT_TENANT_ID, sch.id).await.unwrap();
}

/// One tenant with a backlog of due schedules cannot crowd another out of a scan: each
/// tenant gets at most `per_tenant`, and every tenant's first comes before anyone's second.
async fn due_schedules_are_shared_fairly_between_tenants(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let s = db.migrated_store().await;
    let busy = DEFAULT_TENANT_ID;
    let quiet = s.create_tenant("quiet").await.unwrap().id;
    let busy_emp = hire(&s, busy).await;
    let quiet_emp = hire(&s, quiet).await;
    let schedule = |employee_id| ScheduleFields {
        employee_id,
        cron: "0 0 1 1 *".into(),
        timezone: "UTC".into(),
        input: json!("report"),
        priority: 0,
        enabled: true,
    };
    // The busy tenant's 30 schedules all became due before the quiet tenant's one.
    for i in 0..30 {
        let fire = now() - chrono::Duration::seconds(600 - i);
        s.create_schedule(busy, &schedule(busy_emp), fire)
            .await
            .unwrap();
    }
    let q = s
        .create_schedule(
            quiet,
            &schedule(quiet_emp),
            now() - chrono::Duration::seconds(1),
        )
        .await
        .unwrap();
    let due = s.due_schedules(Utc::now(), 5, 100).await.unwrap();
    assert_eq!(due.len(), 6, "five of the busy tenant, one of the quiet");
    assert_eq!(due.iter().filter(|d| d.tenant_id == busy).count(), 5);
    let pos = due.iter().position(|d| d.id == q.id).unwrap();
    assert!(
        pos <= 1,
        "the quiet tenant's fire waits behind {pos} others"
    );
    // The busy tenant's five are its oldest, in order.
    let busy_due: Vec<_> = due.iter().filter(|d| d.tenant_id == busy).collect();
    assert!(
        busy_due
            .windows(2)
            .all(|w| w[0].next_fire_at <= w[1].next_fire_at)
    );
    // The overall limit still holds.
    assert_eq!(s.due_schedules(Utc::now(), 5, 3).await.unwrap().len(), 3);
    assert_eq!(s.count_schedules(busy).await.unwrap(), 30);
    assert_eq!(s.count_schedules(quiet).await.unwrap(), 1);
}

/// Running tasks of `tenant`.
async fn running(s: &DynStore, tenant: Uuid) -> usize {
    let running = TaskFilter {
        status: Some(TaskStatus::Running),
        ..TaskFilter::default()
    };
    s.list_tasks(tenant, &running, None, 1000)
        .await
        .unwrap()
        .items
        .len()
}

fn succeed() -> Finish {
    Finish {
        status: TaskStatus::Succeeded,
        result: Some(json!({"output": "done"})),
        error: None,
        run_at: None,
        step: StepUpdate::default(),
        messages: Vec::new(),
    }
}

/// Tenant A queues 1,000 tasks at the top priority, tenant B one at the default: B's task
/// is in the first batch, and when A holds every slot, the next free slot goes to B.
async fn one_tenant_cannot_starve_another(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let s = db.migrated_store().await;
    let b = s.create_tenant("tenant-b").await.unwrap().id;
    let e = hire(&s, DEFAULT_TENANT_ID).await;
    for _ in 0..1000 {
        s.create_task(&new_task(e, 100)).await.unwrap();
    }
    let eb = hire(&s, b).await;
    let mut lone = new_task(eb, 0);
    lone.tenant_id = b;
    let (lone, _) = s.create_task(&lone).await.unwrap();
    let batch = s.claim_tasks("w1", 16, LEASE, 0).await.unwrap();
    assert_eq!(batch.len(), 16);
    assert!(
        batch.iter().any(|t| t.id == lone.id),
        "tenant B's task waited behind tenant A's backlog"
    );
    // Within a tenant the order is still priority, then age.
    assert_eq!(
        batch[0].priority, 100,
        "ties in rank go to the higher priority"
    );
    assert_eq!(batch[1].id, lone.id, "B is dealt in the first round");

    // A now holds 15 running tasks; B submits again while every slot is busy. The next
    // single free slot goes to B, not to A's higher-priority backlog.
    let (again, _) = s
        .create_task(&NewTask {
            tenant_id: b,
            ..new_task(eb, -100)
        })
        .await
        .unwrap();
    let next = s.claim_tasks("w1", 1, LEASE, 0).await.unwrap();
    assert_eq!(
        next.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![again.id]
    );
    // With B drained, A's backlog is claimed as before, highest priority first.
    let rest = s.claim_tasks("w1", 8, LEASE, 0).await.unwrap();
    assert_eq!(rest.len(), 8);
    assert!(rest.iter().all(|t| t.tenant_id == DEFAULT_TENANT_ID));
}

/// With a cap of 3, concurrent claimers (16 at once, each on its own connection) never
/// give a tenant a fourth running task, the other tenant's work is claimed beside it,
/// and finished tasks free their places.
async fn tenant_max_running_holds_across_concurrent_claimers(backend: Backend) {
    const CAP: u32 = 3;
    let db = TestDb::new(backend).await.unwrap();
    db.migrated_store().await.close().await;
    let s = digital_employee::store::connect(&ConnectOptions {
        url: db.url.clone(),
        max_connections: 16,
    })
    .await
    .unwrap();
    let b = s.create_tenant("tenant-b").await.unwrap().id;
    let e = hire(&s, DEFAULT_TENANT_ID).await;
    for _ in 0..100 {
        s.create_task(&new_task(e, 100)).await.unwrap();
    }
    let eb = hire(&s, b).await;
    for _ in 0..2 {
        s.create_task(&NewTask {
            tenant_id: b,
            ..new_task(eb, 0)
        })
        .await
        .unwrap();
    }
    for round in 0..10 {
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(16));
        let claimers: Vec<_> = (0..16)
            .map(|w| {
                let (s, start) = (s.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    let mut mine = Vec::new();
                    for _ in 0..2 {
                        mine.extend(
                            s.claim_tasks(&format!("w{w}"), 1, LEASE, CAP)
                                .await
                                .unwrap(),
                        );
                    }
                    mine
                })
            })
            .collect();
        let mut claimed = Vec::new();
        for c in claimers {
            claimed.extend(c.await.unwrap());
        }
        assert_eq!(
            running(&s, DEFAULT_TENANT_ID).await,
            CAP as usize,
            "round {round}: tenant A past its cap"
        );
        if round == 0 {
            assert_eq!(running(&s, b).await, 2, "tenant B claimed beside A");
            assert_eq!(
                s.count_tenants_at_cap(CAP).await.unwrap(),
                1,
                "A is held back"
            );
            assert_eq!(s.count_tenants_at_cap(CAP + 1).await.unwrap(), 0);
        }
        // A's running tasks end; the next round refills A up to the cap, no further.
        for t in claimed.iter().filter(|t| t.tenant_id == DEFAULT_TENANT_ID) {
            assert!(
                s.finish_task(&t.lease().unwrap(), &succeed())
                    .await
                    .unwrap()
            );
        }
        assert_eq!(running(&s, DEFAULT_TENANT_ID).await, 0);
    }
    s.close().await;
}

/// A tenant at its cap still gets its delegated sub-task claimed (its parent is running
/// and waits on it; capping it would deadlock the tenant), ahead of its other work; the
/// sub-task does not count against the cap.
async fn a_subtask_is_claimed_past_its_tenants_cap(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let s = db.migrated_store().await;
    let e = hire(&s, DEFAULT_TENANT_ID).await;
    s.create_task(&new_task(e, 0)).await.unwrap();
    let parent = s.claim_tasks("w1", 4, LEASE, 1).await.unwrap();
    assert_eq!(parent.len(), 1);
    for _ in 0..5 {
        s.create_task(&new_task(e, 100)).await.unwrap();
    }
    assert!(
        s.claim_tasks("w1", 4, LEASE, 1).await.unwrap().is_empty(),
        "the tenant is at its cap"
    );
    let (child, _) = s
        .create_task(&NewTask {
            parent_task_id: Some(parent[0].id),
            depth: 1,
            ..new_task(e, 0)
        })
        .await
        .unwrap();
    let got = s.claim_tasks("w1", 4, LEASE, 1).await.unwrap();
    assert_eq!(got.iter().map(|t| t.id).collect::<Vec<_>>(), vec![child.id]);
    // Without a cap the sub-task would still have come first in its tenant's line.
    assert!(
        s.finish_task(&got[0].lease().unwrap(), &succeed())
            .await
            .unwrap()
    );
    assert!(
        s.finish_task(&parent[0].lease().unwrap(), &succeed())
            .await
            .unwrap()
    );
    let next = s.claim_tasks("w1", 4, LEASE, 1).await.unwrap();
    assert_eq!(next.len(), 1, "one place under the cap");
    assert_eq!(next[0].priority, 100);
}

/// Two tenants choosing the same session id get two sessions: no error, no collision,
/// and neither sees the other's messages (nor can write into them).
async fn sessions_are_scoped_by_tenant(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let s = db.migrated_store().await;
    let b = s.create_tenant("tenant-b").await.unwrap().id;
    let (ea, eb) = (Uuid::now_v7(), Uuid::now_v7());
    let sid = Uuid::now_v7();
    let say = |content: &str| SessionMessage {
        id: Uuid::now_v7(),
        session_id: sid,
        role: "user".into(),
        content: content.into(),
        task_id: None,
        created_at: now(),
    };
    let a_session = s.ensure_session(DEFAULT_TENANT_ID, sid, ea).await.unwrap();
    s.append_messages(DEFAULT_TENANT_ID, &[say("a secret")])
        .await
        .unwrap();

    // Tenant B, its own employee, the same id: a session of its own, empty.
    let b_session = s.ensure_session(b, sid, eb).await.unwrap();
    assert_eq!((b_session.id, b_session.tenant_id), (sid, b));
    assert_eq!(b_session.employee_id, eb);
    assert!(s.list_messages(b, sid, 50).await.unwrap().is_empty());
    s.append_messages(b, &[say("b's own")]).await.unwrap();
    // Opening either again keeps each one's employee (no takeover by the other tenant).
    let again = s.ensure_session(DEFAULT_TENANT_ID, sid, ea).await.unwrap();
    assert_eq!(
        (again.tenant_id, again.employee_id, again.created_at),
        (
            a_session.tenant_id,
            a_session.employee_id,
            a_session.created_at
        )
    );
    assert!(matches!(
        s.ensure_session(b, sid, ea).await,
        Err(StoreError::NotFound)
    ));

    let contents = |m: Vec<SessionMessage>| m.into_iter().map(|m| m.content).collect::<Vec<_>>();
    assert_eq!(
        contents(s.list_messages(DEFAULT_TENANT_ID, sid, 50).await.unwrap()),
        vec!["a secret"]
    );
    assert_eq!(
        contents(s.list_messages(b, sid, 50).await.unwrap()),
        vec!["b's own"]
    );
    // A tenant without that session cannot append to it.
    let c = s.create_tenant("tenant-c").await.unwrap().id;
    assert!(matches!(
        s.append_messages(c, &[say("intruder")]).await,
        Err(StoreError::NotFound)
    ));
}

/// Many submits and ends at once (PostgreSQL group-commits them, ADR 0018): each caller
/// gets its own answer — a new task or the one its idempotency key already named, `true`
/// for a held lease and `false` for a stale one — and each task's log is whole and in order.
async fn concurrent_submits_and_ends_each_get_their_own_answer(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let s = db.migrated_store().await;
    let e = hire(&s, DEFAULT_TENANT_ID).await;
    let mut submits = Vec::new();
    for i in 0..200 {
        let s = s.clone();
        let mut t = new_task(e, 0);
        t.input = json!({"n": i});
        // 50 submits share 10 idempotency keys, five each.
        let key = (i < 50).then(|| format!("key-{}", i % 10));
        t.idempotency_key = key.clone();
        submits.push(tokio::spawn(async move {
            let (task, created) = s.create_task(&t).await.unwrap();
            (i, key, task, created)
        }));
    }
    let mut by_key: std::collections::HashMap<String, Vec<(Uuid, bool)>> = Default::default();
    let mut plain = Vec::new();
    for h in submits {
        let (i, key, task, created) = h.await.unwrap();
        match key {
            Some(k) => by_key.entry(k).or_default().push((task.id, created)),
            None => {
                assert!(created, "a submit without a key always creates");
                assert_eq!(task.input, json!({"n": i}), "each caller gets its own task");
                assert_eq!(task.status, TaskStatus::Queued);
                plain.push(task.id);
            }
        }
    }
    assert_eq!(by_key.len(), 10);
    for (k, answers) in &by_key {
        assert_eq!(answers.len(), 5);
        assert_eq!(
            answers.iter().filter(|(_, created)| *created).count(),
            1,
            "{k}: exactly one submit created the task"
        );
        let first = answers[0].0;
        assert!(
            answers.iter().all(|(id, _)| *id == first),
            "{k}: one task for the key"
        );
    }
    assert_eq!(plain.iter().collect::<HashSet<_>>().len(), 150);

    let mut claimed = Vec::new();
    loop {
        let got = s.claim_tasks("w1", 64, LEASE, 0).await.unwrap();
        if got.is_empty() {
            break;
        }
        claimed.extend(got);
    }
    assert_eq!(claimed.len(), 160, "every task created once, claimed once");
    // Every task ends once with its own lease; every fifth also gets a stale end first.
    let mut ends = Vec::new();
    for (i, t) in claimed.iter().enumerate() {
        let lease = t.lease().unwrap();
        if i % 5 == 0 {
            let (s, mut stale) = (s.clone(), lease.clone());
            stale.attempt += 1;
            ends.push(tokio::spawn(async move {
                (false, s.finish_task(&stale, &succeed()).await.unwrap())
            }));
        }
        let s = s.clone();
        let mut f = succeed();
        f.result = Some(json!({"task": t.id}));
        f.step.tokens_in = 7;
        f.step.events = vec![
            NewEvent::new("llm_call", json!({"task": t.id})),
            NewEvent::status(TaskStatus::Succeeded, json!({})),
        ];
        ends.push(tokio::spawn(async move {
            (true, s.finish_task(&lease, &f).await.unwrap())
        }));
    }
    for h in ends {
        let (held, won) = h.await.unwrap();
        assert_eq!(
            held, won,
            "a held lease ends the task, a stale one does not"
        );
    }
    for t in &claimed {
        let got = s.get_task(DEFAULT_TENANT_ID, t.id).await.unwrap();
        assert_eq!(got.status, TaskStatus::Succeeded);
        assert_eq!(
            got.result,
            Some(json!({"task": t.id})),
            "each end wrote its own result"
        );
        assert_eq!(got.tokens_in, 7, "counted once");
        let events = s.list_events(t.id, 0, 100).await.unwrap();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            vec![1, 2, 3, 4],
            "{}: the log has no gap and no duplicate",
            t.id
        );
        assert_eq!(events[2].kind, "llm_call");
        assert_eq!(events[2].payload, json!({"task": t.id}));
    }
}

/// A submit the database refuses fails alone: the submits that went with it in the same
/// batch are written and answered. (PostgreSQL: `jsonb` refuses a NUL character, which
/// fails the batch statement as a whole; SQLite: the tenant does not exist.)
async fn a_bad_write_does_not_fail_the_writes_beside_it(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let s = db.migrated_store().await;
    let e = hire(&s, DEFAULT_TENANT_ID).await;
    let mut submits = Vec::new();
    for i in 0..60 {
        let s = s.clone();
        let mut t = new_task(e, 0);
        let bad = i % 10 == 3;
        if bad {
            match backend {
                Backend::Postgres => t.input = json!("a\u{0}b"),
                Backend::Sqlite => t.tenant_id = Uuid::now_v7(),
            }
        }
        submits.push(tokio::spawn(async move { (bad, s.create_task(&t).await) }));
    }
    let (mut good, mut refused) = (0, 0);
    for h in submits {
        match h.await.unwrap() {
            (false, Ok((task, true))) => {
                good += 1;
                assert_eq!(
                    s.get_task(DEFAULT_TENANT_ID, task.id).await.unwrap().status,
                    TaskStatus::Queued
                );
            }
            (true, Err(_)) => refused += 1,
            (bad, other) => panic!("bad={bad}: unexpected answer {other:?}"),
        }
    }
    assert_eq!((good, refused), (54, 6));
}

/// The session turn of a task is part of its end: written by the same fenced write (a
/// stale end writes none), and skipped, without failing the end, when the task's tenant
/// has no such session (another tenant's session with that id is left untouched).
async fn a_task_end_writes_its_session_turn_in_the_same_write(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let s = db.migrated_store().await;
    let e = hire(&s, DEFAULT_TENANT_ID).await;
    let sid = Uuid::now_v7();
    s.ensure_session(DEFAULT_TENANT_ID, sid, e).await.unwrap();
    let turn = |session: Uuid, task: Uuid, answer: &str| {
        ["hello", answer]
            .iter()
            .zip(["user", "assistant"])
            .map(|(content, role)| SessionMessage {
                id: Uuid::now_v7(),
                session_id: session,
                role: role.into(),
                content: content.to_string(),
                task_id: Some(task),
                created_at: now(),
            })
            .collect::<Vec<_>>()
    };
    let in_session = |session: Uuid| NewTask {
        session_id: Some(session),
        ..new_task(e, 0)
    };

    let (t, _) = s.create_task(&in_session(sid)).await.unwrap();
    let lease = s.claim_tasks("w1", 1, LEASE, 0).await.unwrap()[0]
        .lease()
        .unwrap();
    let stale = Lease {
        owner: "someone-else".into(),
        ..lease.clone()
    };
    let mut fin = succeed();
    fin.messages = turn(sid, t.id, "stale answer");
    assert!(!s.finish_task(&stale, &fin).await.unwrap());
    assert!(
        s.list_messages(DEFAULT_TENANT_ID, sid, 50)
            .await
            .unwrap()
            .is_empty(),
        "an end without the lease writes no turn"
    );
    fin.messages = turn(sid, t.id, "done");
    assert!(s.finish_task(&lease, &fin).await.unwrap());
    let kept = s.list_messages(DEFAULT_TENANT_ID, sid, 50).await.unwrap();
    assert_eq!(
        kept.iter()
            .map(|m| (m.role.as_str(), m.content.as_str(), m.task_id))
            .collect::<Vec<_>>(),
        vec![
            ("user", "hello", Some(t.id)),
            ("assistant", "done", Some(t.id))
        ]
    );

    // Tenant B has a session with this id; the default tenant has none.
    let b = s.create_tenant("tenant-b").await.unwrap().id;
    let other = Uuid::now_v7();
    s.ensure_session(b, other, Uuid::now_v7()).await.unwrap();
    let (t2, _) = s.create_task(&in_session(other)).await.unwrap();
    let lease2 = s.claim_tasks("w1", 1, LEASE, 0).await.unwrap()[0]
        .lease()
        .unwrap();
    assert_eq!(lease2.task_id, t2.id);
    let mut fin2 = succeed();
    fin2.messages = turn(other, t2.id, "not b's");
    assert!(s.finish_task(&lease2, &fin2).await.unwrap());
    assert_eq!(
        s.get_task(DEFAULT_TENANT_ID, t2.id).await.unwrap().status,
        TaskStatus::Succeeded
    );
    assert!(s.list_messages(b, other, 50).await.unwrap().is_empty());
    assert!(
        s.list_messages(DEFAULT_TENANT_ID, other, 50)
            .await
            .unwrap()
            .is_empty()
    );
}

/// The insert finds a task's employee among its own tenant's, by id or by name, at the
/// time of the insert: another tenant's employee, a deleted one and a name no longer
/// given are refused (`NotFound`), also inside a batch of good submits, which are
/// answered as usual; a replayed idempotency key still returns its task.
async fn a_task_goes_only_to_an_employee_of_its_tenant(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let s = db.migrated_store().await;
    let b = s.create_tenant("tenant-b").await.unwrap().id;
    let mine = hire(&s, DEFAULT_TENANT_ID).await;
    let theirs = s.get_employee(b, hire(&s, b).await).await.unwrap();
    let mine_named = s.get_employee(DEFAULT_TENANT_ID, mine).await.unwrap();
    let by = |e: TaskEmployee| NewTask {
        employee: e,
        ..new_task(mine, 0)
    };

    let (t, created) = s
        .create_task(&by(TaskEmployee::Name(mine_named.fields.name.clone())))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(t.employee_id, mine, "a name is stored as its employee's id");

    let refused = [
        TaskEmployee::Id(theirs.id),
        TaskEmployee::Name(theirs.fields.name.clone()),
        TaskEmployee::Id(Uuid::now_v7()),
        TaskEmployee::Name("nobody".into()),
    ];
    // All at once (one batch on PostgreSQL), between good submits.
    let mut calls = Vec::new();
    for (i, e) in refused.iter().enumerate() {
        for good in [true, false] {
            let s = s.clone();
            let t = if good {
                by(TaskEmployee::Id(mine))
            } else {
                by(e.clone())
            };
            calls.push(tokio::spawn(
                async move { (i, good, s.create_task(&t).await) },
            ));
        }
    }
    for c in calls {
        match c.await.unwrap() {
            (_, true, Ok((t, true))) => assert_eq!(t.employee_id, mine),
            (_, false, Err(StoreError::NotFound)) => {}
            (i, good, other) => panic!("{:?} (good={good}): {other:?}", refused.get(i)),
        }
    }
    let listed = s
        .list_tasks(DEFAULT_TENANT_ID, &TaskFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 5, "one by name and four good ones");
    assert!(listed.items.iter().all(|t| t.employee_id == mine));
    assert!(
        s.list_tasks(b, &TaskFilter::default(), None, 100)
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // A renamed employee is found by its new name only; a deleted one not at all, but a
    // replayed key returns the task it named.
    let mut renamed = mine_named.fields.clone();
    renamed.name = "renamed".into();
    s.update_employee(DEFAULT_TENANT_ID, mine, mine_named.version, &renamed)
        .await
        .unwrap();
    assert!(matches!(
        s.create_task(&by(TaskEmployee::Name(mine_named.fields.name.clone())))
            .await,
        Err(StoreError::NotFound)
    ));
    let mut keyed = by(TaskEmployee::Name("renamed".into()));
    keyed.idempotency_key = Some("once".into());
    let (first, created) = s.create_task(&keyed).await.unwrap();
    assert!(created);
    assert_eq!(first.employee_id, mine);
    s.delete_employee(DEFAULT_TENANT_ID, mine, None)
        .await
        .unwrap();
    assert!(matches!(
        s.create_task(&by(TaskEmployee::Id(mine))).await,
        Err(StoreError::NotFound)
    ));
    let (again, created) = s.create_task(&keyed).await.unwrap();
    assert_eq!((again.id, created), (first.id, false));
}
