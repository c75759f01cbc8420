from evsim.cli import main

raise SystemExit(main())
