from objbench.harness.cli import main

main()
