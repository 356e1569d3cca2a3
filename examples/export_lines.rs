//! Writes the cleaned baskets of an order-history file as order lines
//! (`order_id,line_no,item_id`, one row per distinct item of each basket, numbered in the order
//! of the item's first line), the input of `scripts/jobs/count_cooccurrences.py`; and prints the
//! in-process counting's time and size for comparison.
//!
//! With a third argument, a counts directory (as the Spark job writes it), it also checks that
//! those counts are the in-process counting's.
//!
//! `cargo run --release --example export_lines -- ORDERS.csv[.gz] LINES.csv [COUNTS_DIR]`

use std::fs::File;
use std::io::{BufWriter, Write};
use std::time::Instant;

use tandem::offline::counts_file::{read_counts, CountTables};
use tandem::offline::history::History;
use tandem::offline::orders::ReadOptions;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (input, output, counts_dir) = match args.as_slice() {
        [input, output] => (input, output, None),
        [input, output, dir] => (input, output, Some(dir)),
        _ => anyhow::bail!("usage: export_lines ORDERS.csv[.gz] LINES.csv [COUNTS_DIR]"),
    };
    let (history, report) = History::read(File::open(input)?, &ReadOptions::default())?;
    let mut out = BufWriter::new(File::create(output)?);
    writeln!(out, "order_id,line_no,item_id")?;
    for b in 0..history.len() {
        for (line, &i) in history.basket_in_line_order(b).iter().enumerate() {
            writeln!(out, "{b},{line},{}", history.items[i as usize].id)?;
        }
    }
    out.flush()?;
    println!(
        "{} baskets, {} lines, {} items ({} rows read) written to {output}",
        history.len(),
        history.lines(),
        history.items.len(),
        report.rows
    );
    let started = Instant::now();
    let counts = CountTables::from_history(&history, 0..history.len());
    println!(
        "in process: {} items, {} pairs counted in {:.2} s",
        counts.items.len(),
        counts.pairs.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(dir) = counts_dir {
        let read = read_counts(dir.as_ref())?;
        anyhow::ensure!(
            read.by_id() == counts.by_id(),
            "the counts in {dir} are not the in-process counting's"
        );
        println!("the counts in {dir} are the in-process counting's");
    }
    Ok(())
}
