//! A recipe whose prompt is a dynamic prompt template (sd-dynamic-prompts' syntax, see
//! `darkroom_workflow::prompts`) as the recipes it makes: the one expansion the CLI's
//! `--dynamic`, `darkroom batch` and the app's Dynamic prompts share, so a template and a seed
//! give the same prompts and seeds wherever they run.

use darkroom_workflow::prompts::{Mode, PromptError, DEFAULT_MAX};
use darkroom_workflow::{Template, Wildcards};
use serde::{Deserialize, Serialize};

use crate::recipe::seed_at;
use crate::Recipe;

/// How a recipe's prompt is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dynamic {
    /// As written.
    #[default]
    Off,
    /// Each image its own expansion, picked by the image's seed.
    Random,
    /// Every combination (at most [`DEFAULT_MAX`]), each with the recipe's batch settings.
    Combinatorial,
}

impl Dynamic {
    pub const ALL: [Dynamic; 3] = [Dynamic::Off, Dynamic::Random, Dynamic::Combinatorial];

    pub fn name(self) -> &'static str {
        match self {
            Dynamic::Off => "off",
            Dynamic::Random => "random",
            Dynamic::Combinatorial => "combinatorial",
        }
    }

    pub fn parse(name: &str) -> Option<Dynamic> {
        Dynamic::ALL.into_iter().find(|d| d.name().eq_ignore_ascii_case(name.trim()))
    }
}

/// The recipes a template made, and the wildcards it named that have no values (they stay in
/// the prompts as written, `__name__`, as sd-dynamic-prompts leaves them).
#[derive(Debug, Clone, PartialEq)]
pub struct Expanded {
    pub recipes: Vec<Recipe>,
    pub missing: Vec<String>,
}

/// `recipe` (its seed set, else 0) as the runs its prompt makes in `mode`: in random mode one
/// recipe per image (batch size x batch count of them), image `i` with seed `s + i` and the
/// expansion that seed picks; in combinatorial mode one recipe per combination, each with the
/// recipe's batch settings and seeds continuing after the previous combination's images. Each
/// recipe records the template. The recipe itself when `mode` is off or the prompt is plain text.
pub fn expand(recipe: &Recipe, mode: Dynamic, wildcards: &Wildcards) -> Result<Expanded, PromptError> {
    let unchanged = || Expanded { recipes: vec![recipe.clone()], missing: Vec::new() };
    if mode == Dynamic::Off {
        return Ok(unchanged());
    }
    let template = Template::parse(&recipe.prompt)?;
    if template.is_plain() {
        return Ok(unchanged());
    }
    let seed = recipe.seed.unwrap_or(0);
    let images = (recipe.batch_size.max(1) * recipe.batch_count.max(1)) as u64;
    let with = |prompt: String, seed: u64, single: bool| Recipe {
        prompt,
        seed: Some(seed),
        batch_size: if single { 1 } else { recipe.batch_size },
        batch_count: if single { 1 } else { recipe.batch_count },
        template: Some(recipe.prompt.clone()),
        ..recipe.clone()
    };
    let mut missing = Vec::new();
    let mut note = |names: Vec<String>| {
        for name in names {
            if !missing.contains(&name) {
                missing.push(name);
            }
        }
    };
    let recipes = match mode {
        Dynamic::Random => {
            let mut out = Vec::new();
            for i in 0..images {
                let expansion = template
                    .expand_reporting(wildcards, Mode::Random { count: 1, seed: seed_at(seed, i, 1) })?;
                note(expansion.missing);
                out.push(with(
                    expansion.prompts.into_iter().next().unwrap_or_default(),
                    seed_at(seed, i, 1),
                    true,
                ));
            }
            out
        }
        _ => {
            let expansion =
                template.expand_reporting(wildcards, Mode::Combinatorial { max: DEFAULT_MAX, seed })?;
            note(expansion.missing);
            expansion
                .prompts
                .into_iter()
                .enumerate()
                .map(|(j, prompt)| with(prompt, seed_at(seed, j as u64, images), false))
                .collect()
        }
    };
    Ok(Expanded { recipes, missing })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(prompt: &str, seed: u64, batch_size: usize, batch_count: usize) -> Recipe {
        Recipe { prompt: prompt.into(), seed: Some(seed), batch_size, batch_count, ..Recipe::default() }
    }

    #[test]
    fn off_or_plain_text_is_the_recipe_itself() {
        let r = recipe("{a|b} cat", 5, 2, 1);
        assert_eq!(expand(&r, Dynamic::Off, &Wildcards::new()).unwrap().recipes, vec![r.clone()]);
        let plain = recipe("a cat", 5, 2, 1);
        assert_eq!(expand(&plain, Dynamic::Random, &Wildcards::new()).unwrap().recipes, vec![plain.clone()]);
    }

    #[test]
    fn random_mode_gives_each_image_its_seed_and_one_prompt() {
        let r = recipe("a {red|green|blue} __animal__", 10, 2, 2);
        let mut cards = Wildcards::new();
        cards.insert_text("animal", "cat\nowl\n# a comment\n");
        let out = expand(&r, Dynamic::Random, &cards).unwrap();
        assert_eq!(out.recipes.len(), 4);
        for (i, run) in out.recipes.iter().enumerate() {
            assert_eq!(run.seed, Some(10 + i as u64));
            assert_eq!((run.batch_size, run.batch_count), (1, 1));
            assert_eq!(run.template.as_deref(), Some("a {red|green|blue} __animal__"));
            // The same seed picks the same prompt as the template expanded alone.
            let alone = Template::parse(&r.prompt)
                .unwrap()
                .expand(&cards, Mode::Random { count: 1, seed: 10 + i as u64 })
                .unwrap();
            assert_eq!(vec![run.prompt.clone()], alone);
        }
        assert!(out.missing.is_empty());
    }

    #[test]
    fn combinatorial_mode_keeps_the_batch_and_continues_the_seeds() {
        let r = recipe("a {red|blue} __animal__", 7, 2, 3);
        let mut cards = Wildcards::new();
        cards.insert_text("animal", "cat\nowl\n");
        let out = expand(&r, Dynamic::Combinatorial, &cards).unwrap();
        let prompts: Vec<_> = out.recipes.iter().map(|r| r.prompt.as_str()).collect();
        assert_eq!(prompts, ["a red cat", "a red owl", "a blue cat", "a blue owl"]);
        let seeds: Vec<_> = out.recipes.iter().map(|r| r.seed).collect();
        assert_eq!(seeds, [Some(7), Some(13), Some(19), Some(25)]);
        assert!(out.recipes.iter().all(|r| (r.batch_size, r.batch_count) == (2, 3)));
        assert!(out.missing.is_empty());
    }

    #[test]
    fn a_wildcard_without_values_is_reported_and_left_as_written() {
        let r = recipe("a __missing__ at {dawn|dusk}", 1, 1, 1);
        let out = expand(&r, Dynamic::Random, &Wildcards::new()).unwrap();
        assert!(out.recipes[0].prompt.starts_with("a __missing__ at "));
        assert_eq!(out.missing, ["missing"]);
    }

    #[test]
    fn a_bad_template_is_an_error() {
        assert!(expand(&recipe("a {red|blue", 1, 1, 1), Dynamic::Random, &Wildcards::new()).is_err());
    }

    #[test]
    fn modes_by_name() {
        assert_eq!(Dynamic::parse(" Combinatorial"), Some(Dynamic::Combinatorial));
        assert_eq!(Dynamic::parse("nope"), None);
    }
}
