"""Entry point of `python -m mgc.bot`."""

from mgc.bot.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
