//! The Graphite web UI in a real browser, headless Chromium (Debian's
//! `chromium`, through `scripts/chromium-headless`):
//!
//! - the first link `scripts/demo` prints shows the tutorial's graphs: a
//!   screenshot of it has a plotted line, pixels of the colour the demo gives
//!   root's requests inside a graph image, once the traffic has reached
//!   Graphite (the README's picture is this screenshot:
//!   `GRAPHITE_UI_SCREENSHOT=<path>` keeps a copy, and
//!   `GRAPHITE_UI_COLUMNS=<n>` waits for a line that long, in pixels);
//! - graphite-web's composer, opened the way the demo's second link opens it,
//!   runs its scripts, and the metric tree shows `stats` → `statstest` →
//!   `root`, loaded by the page itself through `/metrics/find`.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::demo::Demo;
use e2e::{poll, repo_root, ExampleApi, Stack};

/// The colour `scripts/demo` gives `stats_counts.statstest.root.called` on
/// its dashboard.
const ROOT_CALLED_RED: [u8; 3] = [0xD6, 0x27, 0x28];

/// A plotted line spans at least this many columns of pixels: about 20 s
/// of the dashboard's 10 minutes (`GRAPHITE_UI_COLUMNS` asks for more).
const LINE_COLUMNS: usize = 20;

/// The bottom of a graph image holding its x axis and legend (whose colour
/// swatches are not a line): this share of its height.
const AXIS_AND_LEGEND: f64 = 0.25;

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
    // to a screenshot.
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

/// A screenshot's pixels, row by row.
struct Screenshot {
    width: usize,
    height: usize,
    rgb: Vec<[u8; 3]>,
}

impl Screenshot {
    fn read(path: &Path) -> Result<Screenshot, String> {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder
            .read_info()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut buf = vec![0; reader.output_buffer_size().ok_or("no buffer size")?];
        let info = reader
            .next_frame(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let channels = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => return Err(format!("unexpected PNG colour type {other:?}")),
        };
        let rgb = buf[..info.buffer_size()]
            .chunks_exact(channels)
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        Ok(Screenshot {
            width: info.width as usize,
            height: info.height as usize,
            rgb,
        })
    }

    fn at(&self, x: usize, y: usize) -> [u8; 3] {
        self.rgb[y * self.width + x]
    }
}

/// What a screenshot shows of one colour.
#[derive(Debug, PartialEq)]
struct LineSeen {
    /// Graph images on the page: regions of non-black pixels (the
    /// dashboard's background around them is black) at least 300 × 150,
    /// away from the page's edges (the toolbar is not one).
    graphs: usize,
    /// Pixels of the colour inside a graph image, above its axis and legend.
    pixels: usize,
    /// Columns those pixels span.
    columns: usize,
}

/// Counts the pixels of `colour` (within a small distance, for
/// anti-aliasing) inside graph images, above their axis and legend.
fn line_in_graphs(shot: &Screenshot, colour: [u8; 3]) -> LineSeen {
    let black = |p: [u8; 3]| p.iter().all(|&c| c < 24);
    let near = |p: [u8; 3]| {
        p.iter()
            .zip(colour)
            .map(|(&a, b)| (i32::from(a) - i32::from(b)).pow(2))
            .sum::<i32>()
            < 40 * 40
    };
    // Label the non-black regions (4-connected), and keep those of a graph's size.
    let (w, h) = (shot.width, shot.height);
    let mut region = vec![usize::MAX; w * h];
    // (region, the last row of its plot, above the axis and legend)
    let mut graph_regions: Vec<(usize, usize)> = Vec::new();
    let mut next = 0;
    for start in 0..w * h {
        if region[start] != usize::MAX || black(shot.rgb[start]) {
            continue;
        }
        let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
        let mut queue = VecDeque::from([start]);
        region[start] = next;
        while let Some(i) = queue.pop_front() {
            let (x, y) = (i % w, i / w);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            let neighbours = [
                (x > 0).then(|| i - 1),
                (x + 1 < w).then(|| i + 1),
                (y > 0).then(|| i - w),
                (y + 1 < h).then(|| i + w),
            ];
            for j in neighbours.into_iter().flatten() {
                if region[j] == usize::MAX && !black(shot.rgb[j]) {
                    region[j] = next;
                    queue.push_back(j);
                }
            }
        }
        let inside = x0 > 0 && y0 > 0 && x1 + 1 < w && y1 + 1 < h;
        if inside && x1 - x0 >= 300 && y1 - y0 >= 150 {
            let plot_end = y1 - ((y1 - y0) as f64 * AXIS_AND_LEGEND) as usize;
            graph_regions.push((next, plot_end));
        }
        next += 1;
    }
    let mut columns = vec![false; w];
    let mut pixels = 0;
    for y in 0..h {
        for x in 0..w {
            let in_plot = graph_regions
                .iter()
                .any(|&(r, plot_end)| r == region[y * w + x] && y <= plot_end);
            if in_plot && near(shot.at(x, y)) {
                pixels += 1;
                columns[x] = true;
            }
        }
    }
    LineSeen {
        graphs: graph_regions.len(),
        pixels,
        columns: columns.iter().filter(|&&c| c).count(),
    }
}

#[test]
fn line_in_graphs_counts_a_line_inside_a_graph_and_nothing_outside() {
    // A black page with a toolbar along the top edge and one white graph.
    let (width, height) = (640, 360);
    let mut rgb = vec![[0, 0, 0]; width * height];
    let mut paint = |x0: usize, y0: usize, x1: usize, y1: usize, colour: [u8; 3]| {
        for y in y0..y1 {
            for x in x0..x1 {
                rgb[y * width + x] = colour;
            }
        }
    };
    paint(0, 0, width, 20, [200, 210, 230]);
    paint(10, 5, 20, 15, ROOT_CALLED_RED); // a red icon in the toolbar
    paint(20, 40, 420, 260, [255, 255, 255]);
    paint(40, 240, 50, 250, ROOT_CALLED_RED); // the legend's swatch
    let swatch_only = Screenshot {
        width,
        height,
        rgb: rgb.clone(),
    };
    assert_eq!(
        line_in_graphs(&swatch_only, ROOT_CALLED_RED),
        LineSeen {
            graphs: 1,
            pixels: 0,
            columns: 0
        },
        "neither the toolbar's icon nor the legend's swatch is a line"
    );

    // A line, two pixels thick and anti-aliased (a lighter red), across 100 columns.
    for x in 100..200 {
        let y = 150 - (x - 100) / 4;
        rgb[y * width + x] = ROOT_CALLED_RED;
        rgb[(y + 1) * width + x] = [0xE0, 0x40, 0x40];
    }
    let with_line = Screenshot { width, height, rgb };
    let seen = line_in_graphs(&with_line, ROOT_CALLED_RED);
    assert_eq!(
        seen,
        LineSeen {
            graphs: 1,
            pixels: 200,
            columns: 100
        }
    );
}

#[test]
fn the_demos_first_link_shows_the_tutorials_graphs_with_data() {
    let mut demo = Demo::start("graphite-ui", &[], None);
    let links = demo.links();
    let graphite = format!("http://127.0.0.1:{}/", demo.graphite_port);
    let first = links
        .first()
        .unwrap_or_else(|| panic!("scripts/demo printed no link:\n{}", demo.log()))
        .clone();
    assert!(
        first.starts_with(&graphite),
        "the demo's first link is not Graphite's ({graphite}): {links:?}"
    );

    // What the link opens: the last 10 minutes, refreshed every flush.
    let client = reqwest::blocking::Client::new();
    let (status, state) = e2e::get(&client, &format!("{graphite}dashboard/load/tutorial"));
    assert_eq!(status, 200, "{state}");
    let state: serde_json::Value = serde_json::from_str(&state).expect("dashboard JSON");
    let state = &state["state"];
    assert_eq!(state["defaultGraphParams"]["from"], "-10minutes", "{state}");
    assert_eq!(state["refreshConfig"]["enabled"], true, "{state}");
    assert_eq!(state["refreshConfig"]["interval"], 10000, "{state}");

    // Two flushes of the demo's 10 s make a line.
    let render = format!(
        "{graphite}render?target=stats_counts.statstest.root.called&from=-10min&format=json"
    );
    let points = poll(
        "two points of root's requests in Graphite",
        Duration::from_secs(120),
        || {
            let (_, body) = e2e::get(&client, &render);
            let series: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
            let points = series[0]["datapoints"]
                .as_array()
                .map_or(0, |p| p.iter().filter(|p| p[0].is_number()).count());
            if points >= 2 {
                Ok(points)
            } else {
                Err(body)
            }
        },
    );
    println!("{points} points of stats_counts.statstest.root.called in Graphite");

    // About a column of pixels per second: a longer line takes longer.
    let columns = std::env::var("GRAPHITE_UI_COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(LINE_COLUMNS);
    let shot = std::env::temp_dir().join(format!("demo-dashboard-{}.png", std::process::id()));
    let seen = poll(
        "a plotted line of root's requests in a screenshot of the demo's first link",
        Duration::from_secs(120 + 2 * columns as u64),
        || {
            chromium(&["screenshot", &first, &shot.display().to_string()])?;
            let seen = line_in_graphs(&Screenshot::read(&shot)?, ROOT_CALLED_RED);
            if seen.graphs >= 4 && seen.columns >= columns {
                Ok(seen)
            } else {
                Err(format!("{seen:?}"))
            }
        },
    );
    println!("the demo's first link {first}: {seen:?}");
    if let Some(keep) = std::env::var_os("GRAPHITE_UI_SCREENSHOT") {
        std::fs::copy(&shot, &keep).expect("copy the screenshot to GRAPHITE_UI_SCREENSHOT");
    }
    let _ = std::fs::remove_file(&shot);

    // Ctrl-C stops it, its stack included.
    demo.signal_group("INT");
    poll("the demo stopped", Duration::from_secs(60), || {
        match demo.child.try_wait() {
            Ok(Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(demo.log().contains("stack: stopped"), "{}", demo.log());
}
