"""A local web page for the genre classifier: `python -m mgc.web [--model BUNDLE] [--port P]`.

`app.py` is the Streamlit page; `core.py` holds what the page computes, free of Streamlit so it
can be tested on its own. Importing this package does not import Streamlit.
"""
