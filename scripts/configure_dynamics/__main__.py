from scripts.configure_dynamics.cli import main

raise SystemExit(main())
