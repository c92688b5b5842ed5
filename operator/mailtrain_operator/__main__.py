"""python -m mailtrain_operator: the same as the mailtrain-operator command."""

from mailtrain_operator.cli import main

if __name__ == "__main__":
    main()
