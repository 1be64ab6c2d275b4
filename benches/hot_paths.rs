//! The page path's other hot spots (release build):
//! `cargo bench --bench hot_paths`.
//!
//! - layout splitting: a layout with 20 `<fragment>` elements and a 1 KB
//!   head, split into static parts and slots, as every page request does;
//! - cookie jars: a page's `Cookie` header for an origin from the memory
//!   store (first lookup of a page loads the jar; later ones reuse it), among
//!   100,000 live sessions; recording a `Set-Cookie`.
//!
//! Prints the best of several rounds; no extra dependency.

use std::sync::Arc;
use std::time::Duration;

mod common;
use common::best_of;

use rain_edge::aggregate::{Item, Splitter};
use rain_edge::session::{MemoryStore, PageSession, SessionId, SessionStore};
use url::Url;

/// The layout the peers' bench serves (Tailor syntax), with `n` fragments.
fn layout(n: usize) -> String {
    let mut s = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>layout</title>\n<style>",
    );
    s.push_str(&"x".repeat(1024));
    s.push_str("</style></head><body>\n<header class=\"static\">static header</header>\n");
    for i in 1..=n {
        s.push_str(&format!(
            "<fragment src=\"http://127.0.0.1:18080/frag/f{i}?delay_ms=20&amp;bytes=4096\"{}></fragment>\n",
            if i == 1 { " primary" } else { "" }
        ));
    }
    s.push_str("<footer class=\"static\">static footer</footer>\n</body></html>\n");
    s
}

fn split_layout() {
    for n in [5, 20] {
        let html = layout(n);
        let rounds = 2000;
        let mut slots = 0;
        let t = best_of(5, || {
            for _ in 0..rounds {
                let mut s = Splitter::new(false, usize::MAX);
                s.write(html.as_bytes()).expect("write");
                slots = s
                    .end()
                    .expect("end")
                    .iter()
                    .filter(|i| matches!(i, Item::Slot(_)))
                    .count();
            }
        });
        assert_eq!(slots, n);
        let each = t / rounds;
        println!(
            "layout split, {n:2} fragments ({:5} bytes)   {:>8.2?} each  {:>6.1} MB/s",
            html.len(),
            each,
            html.len() as f64 / 1e6 / each.as_secs_f64()
        );
    }
}

fn cookie_jars() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new(Duration::from_secs(3600)));
    let url = Url::parse("http://shop.internal:8081/shop/cart?x=1").expect("url");
    let set_cookies: Vec<String> = (0..8)
        .map(|i| format!("c{i}=value-{i}-0123456789abcdef; Path=/shop; HttpOnly"))
        .chain(["JSESSIONID=ABCDEF0123456789; Path=/; HttpOnly".to_string()])
        .collect();
    let ids: Vec<SessionId> = (0..100_000).map(|_| SessionId::generate()).collect();
    rt.block_on(async {
        for id in &ids {
            store.create(id).await.expect("create");
            store
                .store(id, "shop", &url, &set_cookies)
                .await
                .expect("store");
        }
    });
    let rounds = 20_000u32;
    let t = best_of(5, || {
        rt.block_on(async {
            for (i, id) in ids.iter().cycle().take(rounds as usize).enumerate() {
                let page = PageSession::new(id.clone(), false, store.clone());
                let h = page.cookie_header("shop", &url).await.expect("jar");
                assert!(h.is_some_and(|h| h.contains("JSESSIONID")), "round {i}");
            }
        })
    });
    println!(
        "cookie header, first of a page (jar of 9, 100k sessions)  {:>8.2?} each",
        t / rounds
    );
    let page = PageSession::new(ids[0].clone(), false, store.clone());
    let t = best_of(5, || {
        rt.block_on(async {
            for _ in 0..rounds {
                let h = page.cookie_header("shop", &url).await.expect("jar");
                assert!(h.is_some());
            }
        })
    });
    println!(
        "cookie header, again in the same page                     {:>8.2?} each",
        t / rounds
    );
    let one = vec!["JSESSIONID=0123456789ABCDEF; Path=/; HttpOnly".to_string()];
    let t = best_of(5, || {
        rt.block_on(async {
            for id in ids.iter().take(rounds as usize) {
                let page = PageSession::new(id.clone(), false, store.clone());
                page.record("shop", &url, &one).await.expect("record");
            }
        })
    });
    println!(
        "record one Set-Cookie (store and page view)               {:>8.2?} each",
        t / rounds
    );
}

fn main() {
    split_layout();
    cookie_jars();
}
