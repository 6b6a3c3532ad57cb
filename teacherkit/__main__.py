"""``python -m teacherkit``: the same CLI as the ``teacherkit`` command (``torchrun -m teacherkit ...``)."""

from teacherkit.cli import main

if __name__ == "__main__":
    main()
