"""Dynamic prompt expansions from the `dynamicprompts` library (sd-dynamic-prompts' engine),
the reference for crates/workflow's templates.

Writes tests/fixtures/prompts/wildcards/ (a small wildcard folder: comments, blank lines,
duplicates, folders, values with their own syntax, JSON and YAML files with weights) and tests/fixtures/prompts/cases.json: for
each template, the library's combinatorial prompts (at most 1000), or the error it raises.

    .venv/bin/pip install dynamicprompts==0.31.0 pyyaml
    .venv/bin/python tests/reference/prompts_reference.py
"""

import json
import shutil
from pathlib import Path

import dynamicprompts
from dynamicprompts.generators import CombinatorialPromptGenerator
from dynamicprompts.wildcards import WildcardManager

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "prompts"
WILDCARDS = {
    "colors.txt": "red\n# warm ones first\n\n  blue  \ngreen\nred\n",
    "animals.txt": "cat\nowl\n# comment\nfox # with a note\n",
    "styles/print.txt": "ink\nwatercolor\n",
    "styles/screen.txt": "neon {glow|haze}\n__colors__ light\n",
    "styles/deep/poster.txt": "bold poster\n",
    "moods.txt": "{calm|stormy} sea\n${tone:quiet} morning\n",
    "crlf.txt": "one\r\ntwo\r\n",
    ".hidden/secret.txt": "never\n",
    # Structured files: many collections each, weights, entries the library leaves out.
    "pack.json": json.dumps({
        "animals": {"pets": ["cat", "2::dog", "0.5::hamster", {"text": "parrot", "weight": 3},
                             {"content": "ferret"}, "", None, 3, "1x::odd"]},
        "sizes": "small",
        "empty": [],
        "n": 5,
    }),
    "sub/styles.yaml": "inks:\n  - ink\n  - '2::woodcut'\nscreens: [neon, glow]\n"
                       "nested:\n  deeper:\n    - deep value\n",
    "listfile.json": json.dumps(["x", "y", 3]),
    "sub/inner.json": json.dumps(["only", "texts"]),
    "weights.yaml": "w:\n  - 3::a\n  - b\n  - 0::c\n",
}

TEMPLATES = [
    "a photo of a cat",
    "abc",
    "  leading and trailing  ",
    "{a|b|c}",
    "{ a | b }",
    "{a|{b|c}}d{e|f}",
    "{a|b} {c|d} {e|f}",
    "{red|green} {cat|owl|fox}, {day|night}",
    "{a||b}",
    "{|a}",
    "{}",
    "{a}",
    "{a|a|b}",
    "{2$$a|a|b}",
    "{0.5::a|2::b}",
    "{1.5::a|.5::b|c}",
    "{2::a|b}",
    "{2$$a|b|c}",
    "{2$$ and $$a|b|c}",
    "{2$$ | $$a|b|c}",
    "{3$$-$$a|b|c}",
    "{1-2$$a|b|c}",
    "{-2$$a|b|c}",
    "{2-$$a|b|c}",
    "{0$$a|b}",
    "{0-1$$a|b}",
    "{5$$a|b}",
    "{3-1$$a|b|c}",
    "{2$$a|{b|c}}",
    "{2$$a|b}{2$$c|d}",
    "x {2$$ {a|b} | c}",
    "{!a|b}",
    "{ !a|b}",
    "__colors__",
    "a __colors__ b",
    "__animals__ and __colors__",
    "__styles/print__",
    "__styles/*__",
    "__styles/deep/*__",
    "__print__",
    "__poster__",
    "__*__",
    "__crlf__",
    "__moods__",
    "__moods(tone=loud)__",
    "{2$$__colors__}",
    "{2$$ and $$__animals__}",
    "{1-2$$__styles/print__}",
    "__missing__",
    "__missing__ x",
    "{a|b} __missing__",
    "__{colors|animals}__",
    "__secret__",
    "${c={x|y}} ${c} ${c}",
    "${c=!{x|y}} ${c} ${c}",
    "${c=red} a ${c} b",
    "${ c = {x|y} }${c}",
    "${a=x}${a?=y}${a}",
    "${b?=y}${b}",
    "${t:default} tone",
    "${t: {soft|loud}} tone",
    "${t=__colors__}${t}-${t}",
    "a # comment\nb",
    "{a|b}  # c\nd",
    "# only a comment",
    "a\n# middle\nb",
    "{a # in a variant\n|b}",
    "// note\nfoo",
    "/* block */ foo {x|y}",
    "url http://example.com",
    "%{A ... B $$ {x|y}}",
    "%{{very … detailed|…, close-up} $$ {cat|dog}}",
    "%{no marker $$ x}",
    "line one\nline two {a|b}",
    "tabs\t{a|b}",
    "unicode café {crème|brûlée}",
    "emoji 🐱 {a|b}",
    "(masterpiece:1.2), {cat|dog}, [sketch]",
    "<lora:ink:0.8> {cat|dog}",
    "a__b",
    "{a|b",
    "a}b",
    "a|b",
    "50% off",
    "cost $5",
    "${undefined}",
    "__animals/pets__",
    "__pets__",
    "{2$$__animals/pets__}",
    "__sizes__",
    "__empty__",
    "__n__",
    "__sub/inks__",
    "__inks__",
    "__sub/*__",
    "__sub/nested/deeper__",
    "__listfile__",
    "__inner__",
    "__w__",
    "{2$$__w__}",
    "__w__ {x|y}",
    "{2$$a|b|c|d|e}",
    "{a|b|c|d} {e|f|g|h} {i|j|k|l} {m|n|o|p} {q|r|s|t}",
]


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    wc = OUT / "wildcards"
    for name, text in WILDCARDS.items():
        path = wc / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
    generator = CombinatorialPromptGenerator(WildcardManager(wc))
    cases = []
    for template in TEMPLATES:
        case = {"template": template}
        try:
            case["prompts"] = generator.generate(template, max_prompts=1000)
        except Exception as e:  # the library refuses it: so must we
            case["error"] = type(e).__name__
        cases.append(case)
    meta = {"dynamicprompts": dynamicprompts.__version__, "max": 1000, "cases": cases}
    (OUT / "cases.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(cases)} templates -> {OUT / 'cases.json'}")


if __name__ == "__main__":
    main()
