//! `portcullis revocations list` filters and table output, and `portcullis revocations
//! audit`: the admin API's `GET /revocations` and `GET /audit` for a terminal.

use anyhow::Context;
use http::Method;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;

use super::AdminArgs;

/// The filters both listings take.
#[derive(clap::Args, Debug, Default)]
pub struct Filter {
    /// Only entries of this subject (subject revokes, and token revokes whose `sub` is known).
    #[arg(long)]
    pub sub: Option<String>,
    /// Only entries for this jti.
    #[arg(long)]
    pub jti: Option<String>,
    /// Only entries made with this admin credential (its label).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only entries made at or after this time: unix seconds or RFC 3339.
    #[arg(long)]
    pub since: Option<String>,
}

impl Filter {
    pub fn any(&self) -> bool {
        self.sub.is_some() || self.jti.is_some() || self.actor.is_some() || self.since.is_some()
    }
}

/// The request path with its query.
pub fn path(
    base: &str,
    kind: Option<String>,
    limit: usize,
    cursor: Option<String>,
    f: &Filter,
) -> String {
    let mut q = vec![format!("limit={limit}")];
    let pairs = [
        ("kind", kind.as_deref()),
        ("cursor", cursor.as_deref()),
        ("sub", f.sub.as_deref()),
        ("jti", f.jti.as_deref()),
        ("actor", f.actor.as_deref()),
        ("since", f.since.as_deref()),
    ];
    for (k, v) in pairs {
        if let Some(v) = v {
            q.push(format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)));
        }
    }
    format!("{base}?{}", q.join("&"))
}

/// Columns of the table, in order.
const COLUMNS: [&str; 9] = [
    "time", "action", "kind", "id", "sub", "actor", "ip", "reason", "exp",
];

/// Fetch one page and print it as a table.
pub fn print_table(args: AdminArgs, path: &str) -> anyhow::Result<()> {
    let client = args.client()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, text) = rt.block_on(client.call(Method::GET, path, None))?;
    if !(200..300).contains(&status) {
        println!("{}", text.trim_end());
        anyhow::bail!("admin API answered {status}");
    }
    let page: Value = serde_json::from_str(&text).context("the admin API answered non-JSON")?;
    let items = page["items"].as_array().cloned().unwrap_or_default();
    print!("{}", table(&items));
    if let Some(c) = page["next_cursor"].as_str() {
        println!("(more: --cursor {c})");
    }
    Ok(())
}

fn cell(item: &Value, col: &str) -> String {
    match (col, &item[col]) {
        (_, Value::Null) => "-".into(),
        ("time" | "exp", Value::Number(n)) => n
            .as_u64()
            .map(|s| {
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
                )
                .to_string()
            })
            .unwrap_or_else(|| n.to_string()),
        (_, Value::String(s)) => s.replace(['\n', '\t'], " "),
        (_, v) => v.to_string(),
    }
}

/// Aligned columns, a header line first.
pub fn table(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| COLUMNS.iter().map(|c| cell(i, c)).collect())
        .collect();
    let widths: Vec<usize> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(COLUMNS.iter().map(|c| c.to_uppercase()).collect(), &mut out);
    for r in rows {
        line(r, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_table_has_a_header_and_one_aligned_row_per_item() {
        let t = table(&[json!({
            "time": 0, "action": "revoke", "kind": "jti", "id": "j-1", "sub": null,
            "actor": "admin", "ip": "127.0.0.1", "reason": "leaked", "exp": 60
        })]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("TIME"));
        assert!(lines[1].starts_with("1970-01-01T00:00:00Z"));
        assert!(lines[1].contains("leaked"));
        assert_eq!(lines[0].find("ACTION"), lines[1].find("revoke"));
    }

    #[test]
    fn the_query_is_percent_encoded() {
        let f = Filter {
            sub: Some("a b&c".into()),
            ..Filter::default()
        };
        assert_eq!(
            path("/revocations", None, 5, None, &f),
            "/revocations?limit=5&sub=a%20b%26c"
        );
    }
}
