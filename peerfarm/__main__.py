from peerfarm.cli import main

raise SystemExit(main())
