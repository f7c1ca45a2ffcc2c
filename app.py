"""Launch DraftScope: ``python app.py [--host H] [--port P] [--allow-local-models] [--share]``.

``from app.main import ...`` below finds the ``app/`` package, not this file: run as a script this file is
``__main__``, and in one directory a package takes precedence over a module of the same name.
"""

from app.main import main

if __name__ == "__main__":
    main()
