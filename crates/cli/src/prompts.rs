//! `darkroom prompts`: a dynamic prompt template's prompts, one a line.

use std::path::PathBuf;

use clap::Args;
use darkroom_workflow::prompts::{Mode, DEFAULT_MAX};
use darkroom_workflow::{Template, Wildcards};

use crate::failure::{usage, Failure};
use crate::generate::read_wildcards;

#[derive(Args)]
pub struct PromptsArgs {
    /// The template, in sd-dynamic-prompts' syntax: `{a|b}`, `{2$$ and $$a|b|c}`, `__wildcard__`,
    /// `${var=…}`; `-` reads it from standard input.
    pub template: String,
    /// Folder of wildcard files (`name.txt`, one value a line; subfolders give `__folder/name__`).
    #[arg(long)]
    pub wildcards: Option<PathBuf>,
    /// Every combination, in order (at most --max).
    #[arg(long, conflicts_with_all = ["count", "seed"])]
    pub combinatorial: bool,
    /// With --combinatorial: the most prompts to print.
    #[arg(long, requires = "combinatorial", default_value_t = DEFAULT_MAX)]
    pub max: usize,
    /// Random mode: how many prompts.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Random mode: the seed (the same seed gives the same prompts); random when left out.
    #[arg(long)]
    pub seed: Option<u64>,
}

pub fn run(args: PromptsArgs) -> Result<(), Failure> {
    let text = if args.template == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| Failure {
            message: format!("reading the template from standard input: {e}"),
            usage: false,
        })?;
        text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t).to_string()).unwrap_or(text)
    } else {
        args.template.clone()
    };
    let wildcards = match &args.wildcards {
        Some(dir) => read_wildcards(dir)?,
        None => Wildcards::new(),
    };
    let template = Template::parse(&text).map_err(|e| usage(e.to_string()))?;
    let mode = if args.combinatorial {
        Mode::Combinatorial { max: args.max, seed: args.seed.unwrap_or(0) }
    } else {
        let seed = args.seed.unwrap_or_else(crate::generate::random_seed);
        if args.seed.is_none() {
            eprintln!("seed: {seed}");
        }
        Mode::Random { count: args.count, seed }
    };
    let expansion = template.expand_reporting(&wildcards, mode).map_err(|e| usage(e.to_string()))?;
    for name in &expansion.missing {
        let hint = match &args.wildcards {
            Some(dir) => format!("no {name}.txt in {}", dir.display()),
            None => "give the folder with --wildcards".to_string(),
        };
        eprintln!("warning: wildcard __{name}__ has no values ({hint}); it is left in the prompt as written");
    }
    let mut out = String::new();
    for p in &expansion.prompts {
        out.push_str(p);
        out.push('\n');
    }
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(())
}
