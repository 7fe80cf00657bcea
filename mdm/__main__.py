from mdm.cli.main import main

raise SystemExit(main())
