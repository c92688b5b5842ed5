"""python -m mailtrain_sender: the same as the mailtrain-sender command."""

from mailtrain_sender.cli import main

if __name__ == "__main__":
    main()
