"""What each chapter of the book computes, one module (or package) per chapter, named after it. Chapters import these
and print `summary(...)`, the closing numbers that nbval re-checks; plotting lives in `qkcore.plotting` under the same
names. Nothing in qkcore's core (covariance, subspace, interventions, planted, lm, toy, organisms) imports from here.

| chapter (book/…)              | module                                     | paper            |
| ----------------------------- | ------------------------------------------ | ---------------- |
| method                        | experiments.method                         | §3, the method   |
| rank_recovery                 | experiments.toy.rank_recovery              | Figure 2         |
| why_it_works                  | experiments.toy.why_it_works               | App. B, Figure 5 |
| cube                          | experiments.toy.cube                       | Figure 3         |
| causal_swaps                  | experiments.toy.causal_swaps               | Figure 4         |
| filter_heads                  | experiments.filter_heads.{analysis, vectors, swaps, report} | Figures 6–7 |
| binding_subspaces             | experiments.binding.subspaces (+ analysis, contrasts, views) | Figure 8  |
| binding_interventions         | experiments.binding.interventions          | Figure 9         |
| attribution                   | experiments.binding.attribution            | Figure 10        |

Shared by the chapters: `chapter.start_chapter` (thread policy, warning filter), `models.load_chapter_model` (the
organism or any model qkcore.lm loads), `tables` (printing). The toy chapters share `toy.model` (the one trained head);
the binding chapters share `binding.analysis` (both contrasts with their controls) and `binding.prompts`.
"""

from qkcore.experiments.chapter import quiet_warnings

quiet_warnings()
