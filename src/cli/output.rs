//! Printing: aligned tables for people, JSON for scripts.

use std::io::Write;

use comfy_table::{presets, Table};

/// A borderless table with two spaces between columns.
pub struct Columns {
    table: Table,
}

impl Columns {
    pub fn new(header: &[&str]) -> Columns {
        let mut table = Table::new();
        table.load_preset(presets::NOTHING);
        table.set_header(header.to_vec());
        Columns { table }
    }

    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let cells: Vec<String> = cells.into_iter().map(Into::into).collect();
        self.table.add_row(cells);
    }

    /// The table as text, each line trimmed, ending in a newline.
    pub fn render(mut self) -> String {
        let n = self.table.column_count();
        for (i, c) in self.table.column_iter_mut().enumerate() {
            c.set_padding((0, if i + 1 == n { 0 } else { 2 }));
        }
        let mut out = String::new();
        for line in self.table.lines() {
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(self) -> anyhow::Result<()> {
        print_str(&self.render())
    }
}

/// Write to stdout, reporting failures (a closed pipe) as errors.
pub fn print_str(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Pretty JSON on stdout.
pub fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    let mut s = serde_json::to_string_pretty(v)?;
    s.push('\n');
    print_str(&s)
}

/// `-` for a missing value in a table cell.
pub fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `1,2,3`
pub fn join<T: ToString>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_without_borders() {
        let mut c = Columns::new(&["TOPIC", "PARTITIONS"]);
        c.row(["a", "1"]);
        c.row(["longer-name", "12"]);
        assert_eq!(
            c.render(),
            "TOPIC        PARTITIONS\na            1\nlonger-name  12\n"
        );
    }
}
