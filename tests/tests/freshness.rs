//! The freshness bound end to end, as an operator would see it: with the relay process hung, a
//! name change and a suspension made straight in the table reach both tasks within the bound `B`
//! (by reading through), and once the relay resumes, changes propagate through the caches again.

use std::time::{Duration, Instant};

use infra::operator::{self, UserChange};
use staleless_tests::{LocalSystem, PATIENCE, SystemOptions};

/// Clock granularity of the bound's arithmetic (ticks carry milliseconds).
const ROUNDING: Duration = Duration::from_millis(10);

#[tokio::test]
async fn a_hung_relay_cannot_keep_a_suspended_admin_in_or_an_old_name_served_beyond_the_bound() -> anyhow::Result<()> {
    run(LocalSystem::start(SystemOptions::default()).await?).await
}

async fn run(system: LocalSystem) -> anyhow::Result<()> {
    let dynamodb = system.aws.dynamodb();
    let users = system.stack.users_table.clone();
    let change = |name: Option<&str>, status: Option<&str>, roles: Option<&[&str]>| UserChange {
        name: name.map(str::to_owned),
        status: status.map(str::to_owned),
        roles: roles.map(|roles| roles.iter().map(|role| (*role).to_owned()).collect()),
        ..UserChange::default()
    };
    operator::put_user(
        &dynamodb,
        &users,
        "ops",
        &change(Some("Ops"), Some("active"), Some(&["Admin"])),
    )
    .await?;
    system.until_quiescent().await?;
    let alice = system.token("alice", &["Staff"]);
    let ops = system.token("ops", &["Admin"]);
    for task in 0..2 {
        // Cached on both tasks: alice's profile, and ops's admin access.
        assert_eq!(system.get(task, "/users/me", &alice).await?.1["name"], "Alice");
        assert_eq!(system.get(task, "/admin/users/alice", &ops).await?.0, 200);
    }

    system.relay.as_ref().expect("relay").pause();
    // Every tick the tasks will see from now on was written before this instant.
    let before_changes = Instant::now();
    operator::put_user(
        &dynamodb,
        &users,
        "alice",
        &change(Some("Alice While Hung"), None, None),
    )
    .await?;
    operator::put_user(&dynamodb, &users, "ops", &change(None, Some("suspended"), None)).await?;

    for task in 0..2 {
        loop {
            let asked_at = Instant::now();
            let name = system.get(task, "/users/me", &alice).await?.1["name"].clone();
            let (admin_status, _) = system.get(task, "/admin/users/alice", &ops).await?;
            if name == "Alice While Hung" && admin_status == 403 {
                break;
            }
            // The rule, not a speed: a request made more than B after the changes never gets
            // what they replaced, however slowly it is answered.
            let age = asked_at.duration_since(before_changes);
            assert!(
                age <= SystemOptions::TEST_BOUND + ROUNDING,
                "task {task} answered name {name} / admin {admin_status} to a request made {age:?} after the changes"
            );
            assert!(before_changes.elapsed() < PATIENCE, "task {task} never caught up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    system.relay.as_ref().expect("relay").resume();
    system.until_quiescent().await?;
    operator::put_user(&dynamodb, &users, "alice", &change(Some("Alice Resumed"), None, None)).await?;
    let took = system
        .until_all_tasks("/users/me", &alice, |status, body| {
            status == 200 && body["name"] == "Alice Resumed"
        })
        .await?;
    println!("after the relay resumed, a change reached both tasks in {took:?}");
    for task in 0..2 {
        let hits = system
            .metric(task, "staleless_cache_hits_total", &[("cache", "profiles")])
            .await?;
        system.get(task, "/users/me", &alice).await?;
        system.get(task, "/users/me", &alice).await?;
        let after = system
            .metric(task, "staleless_cache_hits_total", &[("cache", "profiles")])
            .await?;
        assert!(after > hits, "task {task}: the cache hits again once ticks are back");
    }
    system.stop().await;
    Ok(())
}
