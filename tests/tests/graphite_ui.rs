//! The Graphite web UI in a real browser: after the example API has sent
//! metrics, headless Chromium (Debian's `chromium`, through
//! `scripts/chromium-headless`) opens graphite-web's composer the way the
//! demo's link does, runs its scripts, and the metric tree shows
//! `stats` → `statstest` → `root`, loaded by the page itself through
//! `/metrics/find`.

use std::process::Command;
use std::time::Duration;

use e2e::{poll, repo_root, ExampleApi, Stack};

/// The tree path the tutorial's readers click through.
const TREE: [&str; 4] = [
    "stats",
    "stats.statstest",
    "stats.statstest.root",
    "stats.statstest.root.called",
];

fn chromium(args: &[&str]) -> Result<String, String> {
    let output = Command::new(repo_root().join("scripts/chromium-headless"))
        .args(args)
        .output()
        .map_err(|e| format!("run scripts/chromium-headless: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "scripts/chromium-headless {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The opening tag of the tree node whose id is `id`, if the page drew it.
fn tree_node<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let attr = format!("ext:tree-node-id=\"{id}\"");
    let at = dom.find(&attr)?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    Some(&dom[start..=end])
}

/// What is missing from the DOM for the tree to show the path, if anything.
fn tree_problem(dom: &str) -> Option<String> {
    let body = dom
        .find("<body")
        .map(|at| &dom[at..at + dom[at..].find('>').unwrap_or(0)])
        .unwrap_or("");
    // ext-base.js/ext-all.js tag <body> with the browser's classes; the
    // page's init() (browser.js, composer.js) lays out a border viewport.
    if !body.contains("ext-webkit") || !body.contains("x-border-layout-ct") {
        return Some(format!("ExtJS did not run: {body}>"));
    }
    if !dom.contains("Graphite Composer") {
        return Some("no composer window".to_owned());
    }
    for (depth, id) in TREE.iter().enumerate() {
        let Some(tag) = tree_node(dom, id) else {
            return Some(format!("tree node {id} not drawn"));
        };
        let leaf = depth == TREE.len() - 1;
        if !leaf && !tag.contains("x-tree-node-expanded") {
            return Some(format!("tree node {id} not expanded: {tag}"));
        }
        if leaf && !tag.contains("x-tree-node-leaf") {
            return Some(format!("tree node {id} is not a leaf: {tag}"));
        }
    }
    None
}

#[test]
fn graphite_ui_loads_its_scripts_and_shows_the_metric_tree() {
    let stack = Stack::start(1000);
    let mut env = stack.statsd_env();
    env.push(("STATSD_PREFIX".into(), "statstest".into()));
    env.push(("DEMO_MAX_DELAY_MS".into(), "0".into()));
    let api = ExampleApi::start(&env);
    let client = reqwest::blocking::Client::new();
    for _ in 0..5 {
        let (status, _) = e2e::get(&client, &format!("{}/?msg=Hello+world", api.url));
        assert_eq!(status, 200);
    }
    // Carbon writes the series within a flush or two.
    let children = poll(
        "stats.statstest.root in Graphite",
        Duration::from_secs(60),
        || {
            let found = stack.find("stats.statstest.*")?;
            if found.iter().any(|id| id == "stats.statstest.root") {
                Ok(found)
            } else {
                Err(format!("{found:?}"))
            }
        },
    );
    assert!(children.contains(&"stats.statstest.root".to_owned()));

    // The static files are served (whitenoise), not a 404 page.
    let ext = client
        .get(format!("{}/static/js/ext/ext-all.js", stack.graphite_url()))
        .send()
        .expect("GET ext-all.js");
    assert_eq!(ext.status().as_u16(), 200, "/static/js/ext/ext-all.js");
    let ext = ext.text().expect("ext-all.js body");
    assert!(
        ext.len() > 100_000 && ext.contains("Ext"),
        "ext-all.js looks wrong"
    );

    // The composer frame of the UI, asked to show the path as `/?target=`
    // does: its scripts expand the tree node by node through /metrics/find.
    let composer = format!(
        "{}/composer/?showTarget=stats.statstest.root.called",
        stack.graphite_url()
    );
    let log_before = stack.log("graphite-web").len();
    let dom = poll("the tree in Chromium", Duration::from_secs(120), || {
        let dom = chromium(&["dump-dom", &composer])?;
        match tree_problem(&dom) {
            None => Ok(dom),
            Some(problem) => Err(problem),
        }
    });
    assert!(tree_problem(&dom).is_none());

    // graphite-web's request log shows what the browser fetched: the
    // scripts (200), no static 404, and the tree's own /metrics/find calls.
    let log = stack.log("graphite-web");
    let log = &log[log_before..];
    for script in [
        "/static/js/ext/adapter/ext/ext-base.js",
        "/static/js/ext/ext-all.js",
        "/static/js/browser.js",
        "/static/js/composer.js",
        "/static/js/ext/resources/css/ext-all.css",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("\"GET {script} ")) && l.contains("\" 200 ")),
            "the browser did not load {script} with 200; graphite-web log:\n{log}"
        );
    }
    let not_found: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("\"GET /static/") && !l.contains("\" 200 ") && !l.contains("\" 304 ")
        })
        .collect();
    assert!(
        not_found.is_empty(),
        "static requests that failed: {not_found:#?}"
    );
    for query in [
        "query=stats.*&",
        "query=stats.statstest.*&",
        "query=stats.statstest.root.*&",
    ] {
        assert!(
            log.lines().any(|l| l.contains("\"GET /metrics/find/?")
                && l.contains(query)
                && l.contains("\" 200 ")),
            "the page's tree did not request /metrics/find with {query}; graphite-web log:\n{log}"
        );
    }

    // The whole UI (header frame + composer frame with the graph) renders
    // to a screenshot; scripts/render-graphs saves the README's copy.
    let shot = std::env::temp_dir().join(format!("graphite-ui-{}.png", std::process::id()));
    let ui = format!(
        "{}/?target=stats.statstest.root.called&from=-5min",
        stack.graphite_url()
    );
    chromium(&["screenshot", &ui, &shot.display().to_string()]).expect("a screenshot");
    let png = std::fs::read(&shot).expect("read the screenshot");
    let _ = std::fs::remove_file(&shot);
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let (width, height) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert_eq!((width, height), (1280, 720));
    assert!(png.len() > 20_000, "a blank page? {} bytes", png.len());

    assert!(api.terminate(), "example-api did not stop cleanly");
}
