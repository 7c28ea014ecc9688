//! `selfdeploy machine`: the transition table, as a table, data or diagram.

use selfdeploy::table;

use super::EXIT_OK;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    /// Aligned columns, one row per transition.
    Table,
    /// One JSON document.
    Json,
    /// The reviewed table's format (machines/self_deploy.ron).
    Ron,
    /// A graphviz diagram.
    Dot,
    /// A mermaid diagram.
    Mermaid,
    /// docs/MACHINE.md
    Markdown,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  selfdeploy machine
  selfdeploy machine --format dot | dot -Tsvg > machine.svg
  selfdeploy machine --format json")]
pub struct Args {
    /// How to print it: a text table, the data (json, ron), a diagram (dot,
    /// mermaid) or docs/MACHINE.md.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let rows = table::derive();
    let text = match args.format {
        Format::Table => table::to_table(&rows),
        Format::Json => table::to_json(&rows) + "\n",
        Format::Ron => table::to_ron(&rows),
        Format::Dot => table::to_dot(&rows),
        Format::Mermaid => table::to_mermaid(&rows),
        Format::Markdown => table::to_markdown(&rows),
    };
    out!("{text}");
    Ok(EXIT_OK)
}
