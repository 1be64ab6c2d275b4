//! A property test of the hidden cookie jars (issue 7, part 6): random
//! `Set-Cookie` sequences from two origins to three users, through the
//! memory store, against a model in which every (user, origin) pair has its
//! own jar. No cookie ever crosses a user or an origin; deletions and
//! foreign `Domain`s do what RFC 6265 says. Seeded, so a failure replays:
//! RAIN_JAR_SEED=N.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rain_edge::session::{MemoryStore, PageSession, SessionId, SessionStore};
use url::Url;

use crate::support::Rng;

const ORIGINS: [(&str, &str); 2] = [
    ("shop", "http://127.0.0.1:18001/shop/"),
    ("blog", "http://127.0.0.1:18002/blog/"),
];
const NAMES: [&str; 3] = ["JSESSIONID", "PHPSESSID", "pref"];

async fn run(seed: u64) {
    let mut rng = Rng(seed.max(1));
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new(Duration::from_secs(600)));
    let users: Vec<SessionId> = (0..3).map(|_| SessionId::generate()).collect();
    for u in &users {
        store.create(u).await.expect("create");
    }
    // The model: (user, origin) -> name -> value.
    let mut model: HashMap<(usize, usize), BTreeMap<String, String>> = HashMap::new();
    for step in 0..60 {
        let (u, o) = (rng.below(3) as usize, rng.below(2) as usize);
        let name = NAMES[rng.below(3) as usize];
        let value = format!("v{seed}x{step}");
        let url = Url::parse(ORIGINS[o].1).expect("url");
        let (set_cookie, effect) = match rng.below(4) {
            0 => (format!("{name}=; Path=/; Max-Age=0"), None),
            1 => (
                format!("{name}={value}; Path=/; Domain=evil.example"),
                Some(false),
            ),
            _ => (format!("{name}={value}; Path=/; HttpOnly"), Some(true)),
        };
        let page = PageSession::new(users[u].clone(), false, store.clone());
        page.record(ORIGINS[o].0, &url, std::slice::from_ref(&set_cookie))
            .await
            .expect("record");
        let jar = model.entry((u, o)).or_default();
        match effect {
            None => {
                jar.remove(name);
            }
            Some(true) => {
                jar.insert(name.to_string(), value.clone());
            }
            Some(false) => {} // a foreign Domain is refused
        }
        // Every user's view of every origin matches the model.
        for (cu, user) in users.iter().enumerate() {
            let view = PageSession::new(user.clone(), false, store.clone());
            for (co, (origin, base)) in ORIGINS.iter().enumerate() {
                let url = Url::parse(base).expect("url").join("page").expect("join");
                let header = view.cookie_header(origin, &url).await.expect("jar");
                let mut got: Vec<String> = header
                    .map(|h| h.split("; ").map(str::to_string).collect())
                    .unwrap_or_default();
                got.sort();
                let want: Vec<String> = model
                    .get(&(cu, co))
                    .map(|j| j.iter().map(|(n, v)| format!("{n}={v}")).collect())
                    .unwrap_or_default();
                assert_eq!(
                    got, want,
                    "seed {seed} step {step} ({set_cookie} from {} to user {u}): user {cu} at {origin}",
                    ORIGINS[o].0
                );
            }
        }
    }
}

#[tokio::test]
async fn no_cookie_crosses_users_or_origins() {
    if let Some(seed) = std::env::var("RAIN_JAR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        run(seed).await;
        return;
    }
    for seed in 1..=100u64 {
        run(seed * 7919).await;
    }
}
