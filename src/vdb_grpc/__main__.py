from vdb_grpc.cli import main

raise SystemExit(main())
