"""The genre classifier's web page (Streamlit): upload a clip or pick a sample, see its genre.

Start it with `python -m mgc.web [--model RUN_OR_BUNDLE] [--port P]`, or directly with
`streamlit run mgc/web/app.py [-- --model RUN_OR_BUNDLE]` (default: the bundled model).
Only the layout lives here; what is computed comes from `mgc.serve.web.core`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import streamlit as st

from mgc.core.audio import AudioError
from mgc.serve.web import core

log = logging.getLogger("mgc.web")

UPLOAD, SAMPLE = "Upload a file", "Try a sample clip"
TOP_COLOUR, OTHER_COLOUR = "#d1495b", "#8d99ae"


@st.cache_resource(show_spinner="Loading the model…")
def load_model(path: str, reject: str | None) -> core.WebModel:
    """Once per server process and model, shared by every visitor; `reject`: the page's
    `--reject-below` setting."""
    model = core.open_model(Path(path))
    model.allow_rejection(reject)
    return model


# ---------------------------------------------------------------------------------------------
# Charts


def probability_chart(row: dict[str, Any]) -> alt.Chart:
    table = core.probability_frame(row)
    top = table["genre"].iloc[0]
    base = alt.Chart(table).encode(
        y=alt.Y("genre:N", sort="-x", title=None),
        x=alt.X(
            "probability:Q",
            scale=alt.Scale(domain=[0, 1]),
            axis=alt.Axis(format="%"),
            title="probability",
        ),
        tooltip=["genre:N", alt.Tooltip("probability:Q", format=".1%")],
    )
    bars = base.mark_bar().encode(
        color=alt.condition(alt.datum.genre == top, alt.value(TOP_COLOUR), alt.value(OTHER_COLOUR))
    )
    labels = base.mark_text(align="left", dx=3).encode(text=alt.Text("probability:Q", format=".1%"))
    # A fixed band per genre: with a fixed chart height, ten genres' labels would crowd out.
    return (bars + labels).properties(height=alt.Step(24))


def timeline_chart(row: dict[str, Any]) -> alt.Chart:
    table = core.timeline_frame(row)
    return (
        alt.Chart(table)
        .mark_rect(stroke="white", strokeWidth=0.5)
        .encode(
            x=alt.X("start:Q", title="time (s)"),
            x2="end:Q",
            y=alt.Y("genre:N", title=None),
            color=alt.Color("genre:N", legend=None),
            opacity=alt.Opacity("score:Q", scale=alt.Scale(domain=[0, 1]), legend=None),
            tooltip=[
                alt.Tooltip("start:Q", format=".1f", title="from (s)"),
                alt.Tooltip("end:Q", format=".1f", title="to (s)"),
                "genre:N",
                alt.Tooltip("score:Q", format=".1%"),
            ],
        )
        .properties(height=alt.Step(26))
    )


# ---------------------------------------------------------------------------------------------
# Page parts


def show_model(model: core.WebModel) -> None:
    with st.sidebar:
        st.header("Model")
        st.markdown(f"**{model.model_id}**")
        st.markdown("\n".join(f"- {line}" for line in model.card))
        st.caption(f"Loaded from `{model.path}`")
        if model.bundle.temperature != 1.0:
            scores = (
                f"Scores are calibrated on validation (temperature {model.bundle.temperature:.2f})"
            )
        else:
            scores = "Scores are the mean of the model's window probabilities, not calibrated"
        if model.reject_below is None:
            outside = "music outside its genres is forced into the nearest one."
        else:
            outside = f'below {100 * model.reject_below:.0f} % the answer is "none of the ten".'
        st.caption(f"{scores}; {outside}")


def analyse(
    model: core.WebModel, path: Path, name: str
) -> tuple[dict[str, Any], tuple[np.ndarray, float] | None]:
    """The result row and the first segment's log-mel, read while `path` still exists."""
    with st.spinner(f"Listening to {name}…"):
        try:
            row = core.classify(model, path, name)
        except Exception:
            # predict_one already turns bad audio into an error row; anything else is a bug,
            # which belongs in the server log, not as a traceback in a visitor's page.
            log.exception("classifying %s failed", name)
            return {"file": name, "error": "unexpected error (details in the server log)"}, None
        if "error" in row:
            return row, None
        try:
            return row, core.first_segment_logmel(model.predictor, path)
        except AudioError:
            return row, None


def show_result(
    model: core.WebModel,
    row: dict[str, Any],
    spectrogram: tuple[np.ndarray, float] | None,
    listen: Callable[[], object],
) -> None:
    """The result; `listen` draws the player, only for audio the decoders could read."""
    if "error" in row:
        st.error(f"Could not classify {row['file']}: {row['error']}.")
        return
    st.subheader(core.headline(row))
    st.caption(f"{row['file']} · {row['duration_s']:.1f} s · predicted by {model.model_id}")
    listen()
    if "note" in row:
        st.info(f"This clip is {row['note']}; the result is less reliable than on longer music.")

    left, right = st.columns([2, 3], gap="large")
    with left:
        st.markdown("**All genres**")
        st.altair_chart(probability_chart(row))
    with right:
        st.markdown("**What the model saw**")
        if spectrogram is None:
            st.caption("The spectrogram could not be drawn for this file.")
        else:
            logmel, seconds = spectrogram
            st.pyplot(core.spectrogram_figure(logmel, seconds))
            whole = seconds >= row["duration_s"] - 0.05
            shown = (
                "the clip" if whole else f"the first {seconds:.0f} s (of {row['duration_s']:.0f} s)"
            )
            st.caption(
                f"Log-mel spectrogram (dB) of {shown}, before the model cuts it into "
                f"{model.window_s:.1f} s windows."
            )

    segments = row.get("segments", [])
    if len(segments) > 1:
        st.markdown("**Along the clip**")
        st.altair_chart(timeline_chart(row))
        st.caption(
            f"Top genre every {model.segment_s:g} s (fainter = less sure): the rows of "
            f"`python -m mgc.predict FILE --segments --window-s {model.segment_s:g}`."
        )
    command = f"python -m mgc.predict FILE --segments --window-s {model.segment_s:g} --format json"
    with st.expander(f"The result row, as `{command}` writes it"):
        st.json(row, expanded=False)


# ---------------------------------------------------------------------------------------------
# The page


def main() -> None:
    st.set_page_config(page_title="Music genre classifier", page_icon="🎵", layout="wide")
    st.title("Music genre classifier")
    st.caption("Log-mel spectrogram + CNN. Upload a clip or try a sample; nothing is kept.")

    path = core.model_path(sys.argv[1:], os.environ)
    if not core.has_bundle(path):
        st.error(core.missing_model_message(path))
        st.stop()
    try:
        model = load_model(str(path.resolve()), core.reject_setting(sys.argv[1:]))
    except Exception as exc:
        # A damaged or foreign bundle: say so in one line; the details go to the server log.
        log.exception("loading the model at %s failed", path)
        st.error(f"Could not load the model at {path}: {' '.join(str(exc).split())}")
        st.stop()
    show_model(model)

    source = st.radio("Audio", [UPLOAD, SAMPLE], horizontal=True, label_visibility="collapsed")
    if source == UPLOAD:
        upload = st.file_uploader(
            f"An audio file ({', '.join(core.UPLOAD_TYPES)}; up to {core.MAX_UPLOAD_MB} MB)",
            type=core.UPLOAD_TYPES,
            max_upload_size=core.MAX_UPLOAD_MB,
        )
        if upload is None:
            st.info("Choose a file above, or switch to a sample clip.")
            st.stop()
        problem = core.upload_problem(upload.size)
        if problem:
            st.error(problem)
            st.stop()
        data = upload.getvalue()
        with core.upload_as_file(upload.name, data) as tmp:
            row, spectrogram = analyse(model, tmp, upload.name)
        show_result(
            model, row, spectrogram, lambda: st.audio(data, format=upload.type or "audio/wav")
        )
    else:
        samples = core.sample_clips()
        if not samples:
            st.warning(f"No sample clips installed in {core.SAMPLES_DIR}.")
            st.stop()
        clip = st.selectbox("Sample clip", samples, format_func=core.sample_label)
        row, spectrogram = analyse(model, clip, clip.name)
        show_result(model, row, spectrogram, lambda: st.audio(str(clip)))


# Streamlit runs this file as __main__; importing it (to test a chart) draws nothing.
if __name__ == "__main__":
    main()
