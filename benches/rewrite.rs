//! Rewriter throughput (release build): `cargo bench --bench rewrite`.
//! A ~1 MB page of realistic fragment markup (classes, links, images, a form)
//! through the fragment rewriter, and a ~200 KB stylesheet through class
//! scoping. Prints MB/s (best of several rounds); no extra dependency.

use std::sync::Arc;

mod common;
use common::{best_of, report_throughput};

use rain_edge::aggregate::{split_fragment, Item, Splitter};
use rain_edge::config::{CssScope, OriginKind};
use rain_edge::rewrite::{rewrite_css, FragmentRewrite, PageUrl};
use url::Url;

fn markup(target: usize) -> String {
    let unit = r#"<div class="product card featured" data-id="42">
  <a class="title" href="product/42?ref=list&amp;color=red">Waxed rain jacket</a>
  <img class="thumb" src="img/42-small.jpg" srcset="img/42-small.jpg 1x, img/42-large.jpg 2x" alt="jacket">
  <p class="price">79.00 EUR <span class="badge sale">-20%</span></p>
  <form method="post" action="cart/add"><input type="hidden" name="id" value="42"><button class="btn primary">Add to cart</button></form>
  <ul class="tags"><li><a href="/shop/tag/rain">rain</a></li><li><a href="https://elsewhere.example/">partner</a></li></ul>
</div>
"#;
    unit.repeat(target / unit.len() + 1)
}

fn stylesheet(target: usize) -> String {
    let unit = ".product.card { border: 1px solid #ccd; border-radius: 6px; padding: .5em 1em }
.product .title:hover, .product .title:focus { text-decoration: underline; color: #225 }
.badge.sale { background: url(img/sale.png) no-repeat; color: white }
@media (max-width: 600px) { .product.card { padding: .2em } .tags li:not(.first) { display: none } }
";
    unit.repeat(target / unit.len() + 1)
}

fn main() {
    let html = markup(1 << 20);
    let rw = Arc::new(FragmentRewrite {
        id: "shop".into(),
        origin: "shop".into(),
        base: Url::parse("http://127.0.0.1:8081/shop/").expect("url"),
        fragment_url: Url::parse("http://127.0.0.1:8081/shop/list").expect("url"),
        kind: OriginKind::Generic,
        page: Arc::new(PageUrl::new("/", Some("q=1"))),
        css_scope: CssScope::Rename,
        class_prefix: "shop".into(),
        page_read: Default::default(),
    });
    let mut out_len = 0;
    for (name, scope) in [("rename", CssScope::Rename), ("off", CssScope::Off)] {
        let rw = Arc::new(FragmentRewrite {
            css_scope: scope,
            ..(*rw).clone()
        });
        let t = best_of(7, || {
            let mut s = Splitter::for_fragment(rw.clone(), 1 << 20);
            for chunk in html.as_bytes().chunks(16 << 10) {
                s.write(chunk).expect("write");
            }
            let items = s.end().expect("end");
            out_len = items
                .iter()
                .map(|i| if let Item::Static(b) = i { b.len() } else { 0 })
                .sum();
        });
        report_throughput(
            &format!("fragment rewrite ({name})"),
            html.len(),
            t,
            out_len,
        );
    }
    let small = b"<div class=\"frag\" data-name=\"f1\">lorem ipsum</div>";
    let t = best_of(7, || {
        for _ in 0..1000 {
            let mut s = Splitter::for_fragment(rw.clone(), 1 << 20);
            s.write(small).expect("write");
            let _ = s.end().expect("end");
        }
    });
    println!("small fragment, setup + rewrite       {:?} each", t / 1000);
    // What the page path does: a rewriter with only the handlers the body
    // needs (no shell, no nested fragment here).
    let t = best_of(7, || {
        for _ in 0..1000 {
            let _ = split_fragment(small, rw.clone(), 1 << 20).expect("split");
        }
    });
    println!("small fragment, as pages rewrite it   {:?} each", t / 1000);
    let css = stylesheet(200 << 10);
    let mut printed = 0;
    let t = best_of(7, || {
        printed = rewrite_css(&css, Some("shop"), |u| Some(format!("/_rain/r/shop/{u}")))
            .expect("css")
            .len();
    });
    report_throughput("stylesheet scoping", css.len(), t, printed);
}
