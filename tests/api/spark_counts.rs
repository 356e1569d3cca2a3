//! The PySpark counting job (`scripts/jobs/count_cooccurrences.py`) run in local mode: the
//! counts it writes, adjacent lines included, read back as the in-process counting of the same
//! history, whether line order comes from a line-number column or from the file's row order.
//!
//! Needs Java 17+ and PySpark; `scripts/test` provides both (`scripts/lib/spark.sh`) and names
//! the interpreter in `TANDEM_SPARK_PYTHON`. Without them the test fails, saying so.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tandem::offline::counts_file::{read_counts, CountTables};
use tandem::offline::history::History;
use tandem::offline::orders::ReadOptions;

const HEADER: &str =
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n";

/// Stock codes, the first ones the most bought; one with a leading zero, as the ids must stay
/// strings end to end.
const CODES: [&str; 12] = [
    "85099B", "22386", "85099C", "22423", "47566", "20725", "22720", "84879", "21212", "23203",
    "01234", "22197",
];

/// 130 orders in the Online Retail layout: each holds one to six codes picked by a small
/// deterministic generator that favours the first codes, some lines twice; order 7 is a
/// single item. Then a cancellation, a postage line and a zero-price line, which
/// `History::read` drops.
fn order_file() -> String {
    let mut csv = String::from(HEADER);
    let mut state = 0x2545_f491_u64;
    let mut next = |n: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    };
    for d in 0..130u64 {
        let invoice = 560_000 + d;
        let date = format!("2011-{:02}-{:02} 10:00:00", 1 + d % 12, 1 + d % 28);
        let customer = if d % 5 == 0 {
            String::new()
        } else {
            format!("{}.0", 12_000 + d % 40)
        };
        let lines = if d == 7 { 1 } else { 1 + next(6) };
        for _ in 0..lines {
            // The smaller of two draws: low codes come up most often.
            let code = CODES[next(CODES.len() as u64).min(next(CODES.len() as u64)) as usize];
            let quantity = 1 + next(12);
            writeln!(
                csv,
                "{invoice},{code},ITEM {code},{quantity},{date},1.95,{customer},United Kingdom"
            )
            .unwrap();
        }
    }
    csv.push_str("C560001,85099B,JUMBO BAG RED RETROSPOT,-10,2011-03-30 11:00:00,1.95,12001.0,United Kingdom\n");
    csv.push_str("560001,POST,POSTAGE,1,2011-02-02 10:00:00,18.00,12001.0,United Kingdom\n");
    csv.push_str(
        "560002,22197,SMALL POPCORN HOLDER,5,2011-03-03 10:00:00,0,12002.0,United Kingdom\n",
    );
    csv
}

/// The history's baskets as order lines, one per item of each basket in line order, plus a
/// later repeat of an order's first item between its second and third lines (a basket is the
/// distinct items of an order, each where its first line is, so the repeat leaves no gap).
/// With `numbered`, a `line_no` column numbers each order's lines (in tens, the repeat in
/// between) and the rows come grouped by item, so orders interleave and an order's lines come
/// in item-id order, not line order. Without it, each order's lines come in line order, one
/// order after another.
fn lines_file(h: &History, numbered: bool) -> String {
    let repeated = (0..h.len())
        .find(|&b| h.basket(b).len() >= 3)
        .expect("an order of three items or more");
    // (order, line number, item) of each line.
    let mut lines: Vec<(usize, u32, u32)> = Vec::new();
    for b in 0..h.len() {
        let items = h.basket_in_line_order(b);
        for (p, &i) in items.iter().enumerate() {
            lines.push((b, 10 * p as u32, i));
            if b == repeated && p == 1 {
                lines.push((b, 15, items[0]));
            }
        }
    }
    let mut csv = String::new();
    if numbered {
        lines.sort_by_key(|&(b, line, i)| (&h.items[i as usize].id, b, line));
        csv.push_str("order_id,line_no,item_id\n");
        for (b, line, i) in lines {
            writeln!(csv, "order-{b},{line},{}", h.items[i as usize].id).unwrap();
        }
    } else {
        csv.push_str("order_id,item_id\n");
        for (b, _, i) in lines {
            writeln!(csv, "order-{b},{}", h.items[i as usize].id).unwrap();
        }
    }
    csv
}

/// The interpreter to run the job with: `TANDEM_SPARK_PYTHON` (set by `scripts/test`), else the
/// virtualenv `scripts/lib/spark.sh` makes, else `python3`.
fn spark_python() -> PathBuf {
    if let Some(python) = std::env::var_os("TANDEM_SPARK_PYTHON") {
        return python.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/spark-venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

/// Fails the test, saying what is missing, when the job cannot run here.
fn check_spark_runs(python: &Path) {
    const HOW: &str = "run the tests with scripts/test, which installs Java 17 and PySpark \
                       (scripts/lib/spark.sh) and sets TANDEM_SPARK_PYTHON";
    let pyspark = Command::new(python)
        .args(["-c", "import pyspark; print(pyspark.__version__)"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {HOW}", python.display()));
    assert!(
        pyspark.status.success(),
        "pyspark is not importable by {}: {}; {HOW}",
        python.display(),
        String::from_utf8_lossy(&pyspark.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
    let java = match std::env::var_os("JAVA_HOME") {
        Some(home) => Path::new(&home).join("bin/java"),
        None => "java".into(),
    };
    let version = Command::new(&java).arg("-version").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "Spark needs Java 17 or later and {} does not run ({version:?}); {HOW}",
        java.display()
    );
}

/// Runs the job in local mode on `lines`, writing the counts to `out`.
fn run_job(python: &Path, lines: &Path, out: &Path) {
    let job = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/jobs/count_cooccurrences.py");
    let started = Instant::now();
    let run = Command::new(python)
        .arg(&job)
        .args(["--master", "local[2]", "--lines"])
        .arg(lines)
        .arg("--out")
        .arg(out)
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{} {} failed ({}):\n{}\n{}",
        python.display(),
        job.display(),
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    eprintln!(
        "the Spark job on {} took {:.1} s",
        lines.display(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn the_spark_job_counts_as_the_in_process_counting() {
    let (h, report) = History::read(
        std::io::Cursor::new(order_file().into_bytes()),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(h.len(), 130, "{report:?}");
    assert_eq!(report.cancellation_lines, 1, "{report:?}");
    assert_eq!(report.not_a_product_lines, 1, "{report:?}");
    assert_eq!(report.non_positive_lines, 1, "{report:?}");
    let expected = CountTables::from_history(&h, 0..h.len());
    let (items, pairs) = expected.by_id();
    assert_eq!(items.len(), CODES.len());
    assert!(pairs.len() > 40, "{pairs:?}");

    assert!(
        pairs.values().any(|&(_, n)| n > 0) && pairs.values().any(|&(c, n)| n < c),
        "some pairs on adjacent lines, some not: {pairs:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let python = spark_python();
    check_spark_runs(&python);
    // Both ways of giving line order, side by side.
    std::thread::scope(|scope| {
        for (name, numbered) in [("numbered", true), ("in-file-order", false)] {
            let (dir, python, h, expected) = (dir.path(), &python, &h, &expected);
            scope.spawn(move || {
                let lines = dir.join(format!("{name}.csv"));
                std::fs::write(&lines, lines_file(h, numbered)).unwrap();
                let out = dir.join(format!("{name}-counts"));
                run_job(python, &lines, &out);
                let read = read_counts(&out).unwrap();
                assert_eq!(read.by_id(), expected.by_id(), "{name}");
            });
        }
    });
}
