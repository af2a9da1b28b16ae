from codetune.cli import main

raise SystemExit(main())
