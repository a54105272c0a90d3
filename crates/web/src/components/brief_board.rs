//! A brief's board: its images grouped as iterations (runs), culled by keyboard at full size,
//! sorted and filtered by any score, with batch verdicts (keep the best N, reject what falls
//! below a threshold, hide near-duplicates), a side-by-side compare of two iterations, and the
//! exports: the brief file, the case-study page, the contact sheet.

use darkroom_pipeline::scores::duplicate_of;
use darkroom_workflow::brief::{self, best, score_label, worse_than, Brief, Culling, Verdict, SCORE_ORDER};
use leptos::prelude::*;

use crate::briefs::{cull, download, slug, stars, Shown};
use crate::components::review::Review;
use crate::gallery::brief_file;
use crate::protocol::StoreOp;
use crate::state::AppState;

/// A score of an image by key (`rating` is the stars).
fn value(s: &Shown, key: &str) -> Option<f64> {
    if key == "rating" {
        return (s.entry.culling.rating > 0).then_some(s.entry.culling.rating as f64);
    }
    s.entry.scores.get(key).copied()
}

fn label(key: &str) -> &str {
    if key == "rating" {
        "Stars"
    } else {
        score_label(key).0
    }
}

/// The keys a board can sort and cull by: stars, then the scores its images have.
fn keys(items: &[Shown]) -> Vec<String> {
    let mut out = vec!["rating".to_string()];
    for key in SCORE_ORDER {
        if items.iter().any(|s| s.entry.scores.contains_key(key)) {
            out.push(key.to_string());
        }
    }
    out
}

fn verdict_name(c: &Culling) -> &'static str {
    match (c.is_final, c.verdict) {
        (true, _) => "final",
        (false, Verdict::Keep) => "kept",
        (false, Verdict::Reject) => "rejected",
        (false, Verdict::Undecided) => "undecided",
    }
}

fn save_brief(state: AppState, brief: Brief) {
    let Some(worker) = state.worker.get_value() else { return };
    worker.store_then(StoreOp::SaveBrief { brief }, Vec::new(), move |outcome| match outcome {
        Ok(_) => state.reload_briefs(),
        Err(e) => state.error.set(Some(format!("The brief was not saved: {e}"))),
    });
}

/// One image's card: thumbnail (opens the review), stars, verdict, reason.
fn card(s: Shown, position: usize, review: RwSignal<Option<usize>>) -> impl IntoView {
    let c = s.entry.culling.clone();
    let verdict = verdict_name(&c);
    let reason = (c.verdict == Verdict::Reject && !c.reason.is_empty()).then(|| c.reason.clone());
    let top = darkroom_workflow::brief::ordered_scores(&s.entry.scores)
        .into_iter()
        .take(2)
        .map(|(k, v)| format!("{} {}", label(k), darkroom_workflow::brief::score_text(k, v)))
        .collect::<Vec<_>>()
        .join(" · ");
    view! {
        <figure class=format!("cull-card {verdict}") data-key=s.entry.key data-verdict=verdict>
            <button class="thumb" title="Review at full size" on:click=move |_| review.set(Some(position))>
                <img src=s.url.clone() alt=s.entry.prompt().to_string() loading="lazy" />
            </button>
            <figcaption>
                <span class="stars">{stars(c.rating)}</span>
                <span class=format!("badge {verdict}")>{verdict}</span>
                {s.entry.is_draft().then(|| view! { <span class="badge draft" title="TAESD's quick decode: finish it for the full VAE's pixels">"draft"</span> })}
                {reason.map(|r| view! { <span class="reason">{r}</span> })}
                <span class="muted small">{top}</span>
            </figcaption>
        </figure>
    }
}

#[component]
pub fn BriefBoard(brief: Memo<Option<Brief>>, items: RwSignal<Vec<Shown>>) -> impl IntoView {
    let state = expect_context::<AppState>();
    let id = move || brief.with(|b| b.as_ref().map(|b| b.id.clone()).unwrap_or_default());
    let mine = Memo::new(move |_| {
        let id = id();
        let mut list: Vec<Shown> = items.with(|all| {
            all.iter().filter(|s| s.entry.brief.as_deref() == Some(id.as_str())).cloned().collect()
        });
        list.sort_by(|a, b| a.entry.time.total_cmp(&b.entry.time));
        list
    });
    let sort = RwSignal::new("iteration".to_string());
    let filter = RwSignal::new("all".to_string());
    let hide_duplicates = RwSignal::new(false);
    // What the board shows, in order: filtered, duplicates hidden, sorted.
    let shown = Memo::new(move |_| {
        let list = mine.get();
        let hashes: Vec<Option<u64>> = list.iter().map(|s| s.entry.phash).collect();
        let dup = duplicate_of(&hashes);
        let f = filter.get();
        let mut out: Vec<Shown> = list
            .into_iter()
            .zip(dup)
            .filter(|(s, d)| {
                !(hide_duplicates.get() && d.is_some()) && (f == "all" || verdict_name(&s.entry.culling) == f)
            })
            .map(|(s, _)| s)
            .collect();
        let key = sort.get();
        if key == "iteration" {
            out.sort_by(|a, b| {
                a.entry.iteration.total_cmp(&b.entry.iteration).then(a.entry.time.total_cmp(&b.entry.time))
            });
        } else if key == "newest" {
            out.sort_by(|a, b| b.entry.time.total_cmp(&a.entry.time));
        } else {
            let values: Vec<Option<f64>> = out.iter().map(|s| value(s, &key)).collect();
            let order = best(&values, &key, values.len());
            let mut rest: Vec<usize> = (0..out.len()).filter(|i| !order.contains(i)).collect();
            let mut ordered: Vec<usize> = order;
            ordered.append(&mut rest);
            out = ordered.into_iter().map(|i| out[i].clone()).collect();
        }
        out
    });
    let review = RwSignal::new(None::<usize>);
    let iterations = Memo::new(move |_| {
        let mut ids: Vec<f64> = mine.with(|l| l.iter().map(|s| s.entry.iteration).collect());
        ids.sort_by(f64::total_cmp);
        ids.dedup();
        ids
    });
    let iteration_name = move |it: f64| {
        let n = iterations.with(|ids| ids.iter().position(|&i| i == it).map_or(0, |p| p + 1));
        brief
            .with(|b| b.as_ref().and_then(|b| b.iteration_note(it)).map(|n| n.name.clone()))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("Iteration {n}"))
    };

    // Batch verdicts over a scope: every iteration, or one.
    let scope = RwSignal::new("all".to_string());
    let keep_n = RwSignal::new(3usize);
    let keep_by = RwSignal::new("rating".to_string());
    let reject_by = RwSignal::new("sharpness".to_string());
    let threshold = RwSignal::new(String::new());
    let reject_reason = RwSignal::new(String::new());
    let notice = RwSignal::new(None::<String>);
    let in_scope = move || {
        let sc = scope.get_untracked();
        mine.get_untracked()
            .into_iter()
            .filter(|s| sc == "all" || s.entry.iteration.to_string() == sc)
            .collect::<Vec<_>>()
    };
    let keep_best = move |_| {
        let list = in_scope();
        let key = keep_by.get_untracked();
        let values: Vec<Option<f64>> = list.iter().map(|s| value(s, &key)).collect();
        let chosen = best(&values, &key, keep_n.get_untracked());
        for &i in &chosen {
            let mut c = list[i].entry.culling.clone();
            c.verdict = Verdict::Keep;
            cull(state, items, list[i].entry.key, c);
        }
        notice.set(Some(format!("Kept the best {} by {}.", chosen.len(), label(&key))));
    };
    let reject_below = move |_| {
        let Ok(limit) = threshold.get_untracked().trim().parse::<f64>() else {
            notice.set(Some("Give the threshold as a number.".into()));
            return;
        };
        let list = in_scope();
        let key = reject_by.get_untracked();
        let values: Vec<Option<f64>> = list.iter().map(|s| value(s, &key)).collect();
        let why = reject_reason.get_untracked().trim().to_string();
        let why = if why.is_empty() { format!("{} past {limit}", label(&key)) } else { why };
        let hit = worse_than(&values, &key, limit);
        let mut n = 0;
        for &i in &hit {
            let c = &list[i].entry.culling;
            if c.is_final || c.verdict == Verdict::Keep {
                continue;
            }
            let mut c = c.clone();
            c.verdict = Verdict::Reject;
            c.reason = why.clone();
            cull(state, items, list[i].entry.key, c);
            n += 1;
        }
        notice.set(Some(format!("Rejected {n} ({why}); kept and final images are left as they are.")));
    };

    let export = move |what: &'static str| {
        let Some(b) = brief.get_untracked() else { return };
        let entries: Vec<crate::gallery::Entry> = mine.get_untracked().into_iter().map(|s| s.entry).collect();
        let file = brief_file(&b, &entries);
        let name = slug(&b.title);
        let outcome = match what {
            "brief" => brief::to_zip(&file)
                .map(|bytes| download(&bytes, "application/zip", &format!("{name}.darkroom-brief.zip"))),
            "html" => brief::case_study_html(&file)
                .map(|html| download(html.as_bytes(), "text/html", &format!("{name}-case-study.html"))),
            _ => brief::contact_sheet(&file)
                .and_then(|img| brief::encode_png(&img))
                .map(|png| download(&png, "image/png", &format!("{name}-contact-sheet.png"))),
        };
        if let Err(e) = outcome {
            notice.set(Some(format!("The export failed: {e}")));
        }
    };

    // Drafts the user kept (or marked final), to finish with the full VAE.
    let kept_drafts = Memo::new(move |_| {
        mine.with(|l| {
            l.iter()
                .filter(|s| {
                    s.entry.is_draft()
                        && (s.entry.culling.verdict == Verdict::Keep || s.entry.culling.is_final)
                })
                .map(|s| s.entry.clone())
                .collect::<Vec<_>>()
        })
    });
    let finish_kept = move |_| crate::briefs::finish_drafts(state, kept_drafts.get_untracked(), notice);
    // CLIP and aesthetic scores for the images that have none yet.
    let unscored = Memo::new(move |_| {
        mine.with(|l| {
            l.iter()
                .filter(|s| !s.entry.scores.contains_key("clip_score"))
                .map(|s| s.entry.key)
                .collect::<Vec<_>>()
        })
    });
    let can_score = move || !state.downloaded(darkroom_weights::ModelKind::Clip).is_empty();
    let score = move |_| crate::briefs::score_images(state, unscored.get_untracked(), notice);

    let compare_a = RwSignal::new(String::new());
    let compare_b = RwSignal::new(String::new());

    let key_options = move |selected: RwSignal<String>| {
        mine.with(|l| keys(l))
            .into_iter()
            .map(|k| {
                let text = label(&k).to_string();
                let on = k.clone();
                view! { <option value=k.clone() selected=move || selected.get() == on>{text}</option> }
            })
            .collect_view()
    };
    let iteration_options = move |selected: RwSignal<String>| {
        iterations
            .get()
            .into_iter()
            .map(|it| {
                let v = it.to_string();
                let on = v.clone();
                view! { <option value=v selected=move || selected.get() == on>{iteration_name(it)}</option> }
            })
            .collect_view()
    };
    let sections = move || {
        let list = shown.get();
        if list.is_empty() {
            return view! { <p class="muted" id="board-empty">"No images here yet. Make this brief active and generate: each run becomes an iteration."</p> }.into_any();
        }
        if sort.get() != "iteration" {
            return view! {
                <div class="board-grid">{list.into_iter().enumerate().map(|(i, s)| card(s, i, review)).collect_view()}</div>
            }
            .into_any();
        }
        let mut groups: Vec<(f64, Vec<(usize, Shown)>)> = Vec::new();
        for (i, s) in list.into_iter().enumerate() {
            match groups.last_mut() {
                Some((it, g)) if *it == s.entry.iteration => g.push((i, s)),
                _ => groups.push((s.entry.iteration, vec![(i, s)])),
            }
        }
        groups
            .into_iter()
            .map(|(it, group)| {
                let note = brief.with_untracked(|b| b.as_ref().and_then(|b| b.iteration_note(it)).cloned()).unwrap_or_default();
                let name = iteration_name(it);
                let prompt = group[0].1.entry.prompt().to_string();
                let kept = group.iter().filter(|(_, s)| s.entry.culling.verdict == Verdict::Keep).count();
                let rejected = group.iter().filter(|(_, s)| s.entry.culling.verdict == Verdict::Reject).count();
                let rename = move |ev: leptos::ev::Event| {
                    if let Some(mut b) = brief.get_untracked() {
                        let note = b.iteration_note(it).map(|n| n.note.clone()).unwrap_or_default();
                        b.set_iteration_note(it, &event_target_value(&ev), &note);
                        save_brief(state, b);
                    }
                };
                let renote = move |ev: leptos::ev::Event| {
                    if let Some(mut b) = brief.get_untracked() {
                        let name = b.iteration_note(it).map(|n| n.name.clone()).unwrap_or_default();
                        b.set_iteration_note(it, &name, &event_target_value(&ev));
                        save_brief(state, b);
                    }
                };
                view! {
                    <section class="iteration" data-iteration=it.to_string()>
                        <div class="iteration-head">
                            <input class="iteration-name" aria-label="Iteration name" prop:value=name.clone() on:change=rename />
                            <span class="muted small">{format!("{} images · {kept} kept · {rejected} rejected", group.len())}</span>
                        </div>
                        <p class="muted small prompt">{prompt}</p>
                        <input class="iteration-note" aria-label="Iteration note" placeholder="A note on this iteration"
                            prop:value=note.note.clone() on:change=renote />
                        <div class="board-grid">{group.into_iter().map(|(i, s)| card(s, i, review)).collect_view()}</div>
                    </section>
                }
            })
            .collect_view()
            .into_any()
    };
    let compare = move || {
        let (a, b) = (compare_a.get(), compare_b.get());
        if a.is_empty() || b.is_empty() {
            return None;
        }
        let column = move |it: String| {
            let list: Vec<Shown> =
                mine.get().into_iter().filter(|s| s.entry.iteration.to_string() == it).collect();
            let name = it.parse::<f64>().map(iteration_name).unwrap_or_default();
            let prompt = list.first().map(|s| s.entry.prompt().to_string()).unwrap_or_default();
            view! {
                <div class="compare-column">
                    <h4>{name}</h4>
                    <p class="muted small prompt">{prompt}</p>
                    {list.into_iter().map(|s| {
                        let verdict = verdict_name(&s.entry.culling);
                        view! { <figure class=format!("cull-card {verdict}")><img src=s.url.clone() alt="" /><figcaption><span class=format!("badge {verdict}")>{verdict}</span> <span class="stars">{stars(s.entry.culling.rating)}</span></figcaption></figure> }
                    }).collect_view()}
                </div>
            }
        };
        Some(view! { <div class="compare" id="compare">{column(a)}{column(b)}</div> })
    };
    view! {
        <div class="board" id="board">
            <div class="board-tools">
                <label class="field narrow"><span>"Sort"</span>
                    <select id="board-sort" on:change=move |ev| sort.set(event_target_value(&ev))>
                        <option value="iteration">"By iteration"</option>
                        <option value="newest">"Newest first"</option>
                        {move || key_options(sort)}
                    </select>
                </label>
                <label class="field narrow"><span>"Show"</span>
                    <select id="board-filter" on:change=move |ev| filter.set(event_target_value(&ev))>
                        <option value="all">"All"</option>
                        <option value="undecided">"Undecided"</option>
                        <option value="kept">"Kept"</option>
                        <option value="rejected">"Rejected"</option>
                        <option value="final">"Finals"</option>
                    </select>
                </label>
                <label class="check"><input id="board-hide-duplicates" type="checkbox"
                    on:change=move |ev| hide_duplicates.set(event_target_checked(&ev)) />"Hide near-duplicates"</label>
                {move || {
                    let n = kept_drafts.with(Vec::len);
                    (n > 0).then(|| view! {
                        <button id="finish-kept" class="primary" on:click=finish_kept
                            title="Decode the kept drafts' latents with the full VAE: the images a direct generation makes">
                            {format!("Finish {n} kept draft{}", if n == 1 { "" } else { "s" })}
                        </button>
                    })
                }}
                {move || {
                    let n = unscored.with(Vec::len);
                    let title = if can_score() {
                        "CLIP score against each image's prompt, and the aesthetic score where the predictor is downloaded: computed on this device"
                    } else {
                        "Download “CLIP ViT-L/14 (scores)” under Models first"
                    };
                    (n > 0).then(|| view! {
                        <button id="score-clip" on:click=score disabled=move || !can_score() title=title>
                            {format!("Score {n} with CLIP")}
                        </button>
                    })
                }}
                <span class="muted small" id="board-count">{move || format!("{} of {} images", shown.with(Vec::len), mine.with(Vec::len))}</span>
            </div>
            <details class="batch">
                <summary>"Batch verdicts"</summary>
                <div class="row">
                    <label class="field narrow"><span>"In"</span>
                        <select id="batch-scope" on:change=move |ev| scope.set(event_target_value(&ev))>
                            <option value="all">"Every iteration"</option>
                            {move || iteration_options(scope)}
                        </select>
                    </label>
                    <label class="field narrow"><span>"Keep the best"</span>
                        <input id="keep-n" type="number" min="1" prop:value=move || keep_n.get().to_string()
                            on:input=move |ev| keep_n.set(event_target_value(&ev).parse().unwrap_or(1)) />
                    </label>
                    <label class="field narrow"><span>"by"</span>
                        <select id="keep-by" on:change=move |ev| keep_by.set(event_target_value(&ev))>{move || key_options(keep_by)}</select>
                    </label>
                    <button id="keep-best" on:click=keep_best>"Keep"</button>
                </div>
                <div class="row">
                    <label class="field narrow"><span>"Reject where"</span>
                        <select id="reject-by" on:change=move |ev| reject_by.set(event_target_value(&ev))>{move || key_options(reject_by)}</select>
                    </label>
                    <label class="field narrow"><span>"is worse than"</span>
                        <input id="reject-threshold" type="text" inputmode="decimal" prop:value=move || threshold.get()
                            on:input=move |ev| threshold.set(event_target_value(&ev)) />
                    </label>
                    <label class="field"><span>"Reason"</span>
                        <input id="reject-reason" type="text" placeholder="soft focus" prop:value=move || reject_reason.get()
                            on:input=move |ev| reject_reason.set(event_target_value(&ev)) />
                    </label>
                    <button id="reject-below" class="danger" on:click=reject_below>"Reject"</button>
                </div>
                <p class="muted small">"Higher is better for stars, CLIP, aesthetic and sharpness; lower for palette ΔE and clipping."</p>
            </details>
            {move || notice.get().map(|n| view! { <p class="small" id="board-notice" role="status">{n}</p> })}
            <details class="compare-pick">
                <summary>"Compare two iterations"</summary>
                <div class="row">
                    <select id="compare-a" on:change=move |ev| compare_a.set(event_target_value(&ev))>
                        <option value="">"—"</option>{move || iteration_options(compare_a)}
                    </select>
                    <select id="compare-b" on:change=move |ev| compare_b.set(event_target_value(&ev))>
                        <option value="">"—"</option>{move || iteration_options(compare_b)}
                    </select>
                </div>
                {compare}
            </details>
            {sections}
            <div class="actions exports">
                <button id="export-brief" on:click=move |_| export("brief")>"Export brief file"</button>
                <button id="export-case-study" on:click=move |_| export("html")>"Case study (HTML)"</button>
                <button id="export-sheet" on:click=move |_| export("sheet")>"Contact sheet (PNG)"</button>
            </div>
            <Review list=shown index=review items=items />
        </div>
    }
}
