from textq.cli import main

main()
