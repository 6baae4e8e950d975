//! Control-plane replicas sharing their state through a real three-member etcd cluster: what one
//! replica stores the others serve, a large artifact travels by hash between replicas, one
//! replica leads the rollouts, and when the leader is killed mid-rollout another takes over and
//! the rollout carries on from its recorded state, with no failed request on any node.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use common::fleet::*;
use common::*;
use serde_json::{json, Value};

/// A replica of the control plane on the cluster.
fn replica(etcd: &EtcdCluster, name: &str) -> (ControlProc, TempDir) {
    let dir = temp_dir(&format!("replica-{name}"));
    let c = control_with(&dir, "127.0.0.1:0", &["--etcd", &etcd.endpoints(), "--replica", name]);
    (c, dir)
}

async fn replication(a: SocketAddr) -> Value {
    api(a, "GET", "/v1/replication", Some(ALICE), None).await.1
}

async fn leader_of(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    for a in addrs {
        if replication(*a).await["leader"] == true {
            return Some(*a);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_state_and_a_follower_takes_over_a_rollout_when_the_leader_dies() {
    let etcd = EtcdCluster::start(3);
    let (a, dir_a) = replica(&etcd, "a");
    let (b, dir_b) = replica(&etcd, "b");
    let addrs = [a.addr, b.addr];
    eventually("one replica leads", Duration::from_secs(10), || async { leader_of(&addrs).await.is_some() }).await;
    let leader = leader_of(&addrs).await.unwrap();
    let follower = if leader == a.addr { b.addr } else { a.addr };
    assert_eq!(replication(follower).await["leader"], false);

    // Nodes know both replicas; traffic runs throughout.
    let origin = origin("etcd-origin");
    let boot = zone_config(&["site.example"], &[origin.addr], "");
    let urls = format!("http://{},http://{}", a.addr, b.addr);
    let fleet: Vec<(String, EdgeProc)> = [("berlin", BERLIN), ("paris", PARIS), ("tokyo", TOKYO)]
        .into_iter()
        .map(|(n, t)| (n.to_string(), fleet_node_at(&urls, n, t, &boot)))
        .collect();
    eventually("the nodes register", Duration::from_secs(10), || async { nodes(leader).await.len() == 3 }).await;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = steady_traffic(&fleet, &stop);

    // A version pushed to the follower is stored once, for both, with one numbering.
    let v1_doc = zone_config(&["site.example", "www.site.example"], &[origin.addr], "");
    let (s, v) = push(follower, ALICE, &v1_doc, "add www", None).await;
    assert_eq!(s, 201, "{v}");
    let v1 = v["version"]["number"].as_u64().unwrap();
    eventually("the leader has it", Duration::from_secs(5), || async {
        api(leader, "GET", &format!("/v1/versions/{v1}"), Some(ALICE), None).await.0 == 200
    })
    .await;
    let (s, v) = push(leader, BOB, &doc("10.0.0.9:80", "another"), "another", None).await;
    assert_eq!(s, 201, "{v}");
    assert!(v["version"]["number"].as_u64().unwrap() > v1);

    // A large artifact (over the log's inline limit) stored through the follower is served by
    // the leader, by hash.
    let list: String = (0..150_000u32).map(|i| format!("{}\n", std::net::Ipv4Addr::from(0x0b00_0000 + i))).collect();
    let url = format!("http://{follower}/v1/artifacts/ip_list/big?message=big+list");
    let auth = format!("Bearer {ALICE}");
    let (s, _, body) =
        request_full(&client(), "POST", &url, &[("authorization", auth.as_str())], list.clone().into_bytes()).await;
    assert_eq!(s, 201, "{body}");
    let hash = palisade_config::content_hash(list.as_bytes());
    eventually("the leader serves the big list", Duration::from_secs(5), || async {
        let (s, _, got) = api_full(leader, "GET", &format!("/v1/artifacts/{hash}/content"), Some(BERLIN), None).await;
        s == 200 && got.len() == list.len()
    })
    .await;

    // A rollout, led by the leader; the leader dies once the first stage has passed.
    let body = json!({ "version": v1, "stages": ["1", "50%", "100%"], "bake_ms": 1500 });
    let (s, v) = api(follower, "POST", "/v1/rollouts", Some(ALICE), Some(body)).await;
    assert_eq!(s, 201, "{v}");
    let id = v["rollout"]["id"].as_u64().unwrap();
    eventually("stage 1 passes", Duration::from_secs(20), || async {
        let (_, r) = api(follower, "GET", &format!("/v1/rollouts/{id}"), Some(ALICE), None).await;
        r["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["message"].as_str().unwrap().starts_with("stage 1 passed")))
    })
    .await;
    let (mut dead, alive, dead_dir, dead_name) = if leader == a.addr { (a, b, dir_a, "a") } else { (b, a, dir_b, "b") };
    dead.proc.child.kill().unwrap();
    dead.proc.wait_exit(Duration::from_secs(5));
    let killed = Instant::now();
    eventually("the follower takes over", Duration::from_secs(10), || async {
        replication(alive.addr).await["leader"] == true
    })
    .await;
    let takeover = killed.elapsed();
    assert!(takeover < Duration::from_secs(5), "took over after {takeover:?}");

    // The rollout carries on from where it was, on the survivor.
    let out = rollout_outcome(alive.addr, id).await;
    assert_eq!(out["rollout"]["state"], "done", "{out}");
    let messages: Vec<&str> =
        out["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap()).collect();
    assert_eq!(messages.iter().filter(|m| m.starts_with("stage 1 passed")).count(), 1, "{messages:?}");
    eventually("every node runs v1", Duration::from_secs(10), || async {
        nodes(alive.addr).await.iter().all(|n| n["applied"].as_u64() == Some(v1))
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in traffic {
        let (node, ok, failed) = t.await.unwrap();
        assert!(ok > 50, "{node} served {ok}");
        assert_eq!(failed, 0, "{node}: failed requests");
    }

    // The killed replica comes back and catches up with everything it missed.
    drop(dead);
    let restarted = control_with(&dead_dir, "127.0.0.1:0", &["--etcd", &etcd.endpoints(), "--replica", dead_name]);
    let want = replication(alive.addr).await["applied"].as_u64().unwrap();
    eventually("the restarted replica catches up", Duration::from_secs(10), || async {
        replication(restarted.addr).await["applied"].as_u64() >= Some(want)
    })
    .await;
    let (_, r) = api(restarted.addr, "GET", &format!("/v1/rollouts/{id}"), Some(ALICE), None).await;
    assert_eq!(r["rollout"]["state"], "done", "{r}");
}
