from prunelib.data import main

raise SystemExit(main())
