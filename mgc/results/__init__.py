"""Scores and what is stored of them: metrics, bootstrap intervals, evaluation artifacts, a results row."""
