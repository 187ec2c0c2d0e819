from mqprobe.cli import main

main()
