"""Verification figures, drawn from the result store only (never recomputed).

One small module per figure, each paired with the claims it illustrates (see :data:`FIGURES`);
each exposes ``NUMBER``, ``STEM``, ``STUDY``, ``CLAIMS``, ``TITLE`` and ``draw(source) -> Figure``.
``ptq-bounds figures`` (:mod:`figures.command`) draws them all; :func:`render` draws one.

Import direction: ``figures → verify`` (the store) and, for claim text and named constants only,
``theory``; never ``algorithms``.
"""

from __future__ import annotations

import importlib

__all__ = ["FIGURES", "figure_module", "render"]

#: figure number -> module
FIGURES = {
    1: "figures.fig1_lambda",
    2: "figures.fig2_ordering",
    3: "figures.fig3_stochastic",
    4: "figures.fig4_mismatch",
    5: "figures.fig5_alphabet",
    6: "figures.fig6_tightness",
    7: "figures.fig7_lambda_rec",
    8: "figures.fig8_tightness_search",
    9: "figures.fig9_alphabet_llm",
}


def figure_module(number: int):
    return importlib.import_module(FIGURES[int(number)])


def render(number: int, source, out_dir, formats=("pdf", "png"), dpi=None, **options) -> list:
    """Draw figure ``number`` from ``source`` (:func:`figures._data.open_source`) into ``out_dir``;
    ``options`` go to the figure's ``draw`` (figure 7: ``K``). Returns the written paths."""
    from ._style import save, style

    mod = figure_module(number)
    with style():
        fig = mod.draw(source, **options)
        return save(fig, out_dir, mod.STEM, formats, dpi=dpi)
