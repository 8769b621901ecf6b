"""Telegram bot that names the genre of the audio people send it: `python -m mgc.bot`.

`core` holds the parts that need no network (reply texts, which files are audio, the per-chat
rate limit), `tokens` where the token comes from and how it is kept out of logs, `app` the
handlers around the shared `mgc.serve.predict.predict_one`, and `mgc.bot` the command line.
"""
