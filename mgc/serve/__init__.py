"""Serving a trained model: predict, export, publish, the web page and the Telegram bot."""
