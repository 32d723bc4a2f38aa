"""`arbg ship` (per-system) under the name the shipped cards' `commands.reproduce` record."""

from arbg_core.ship import script

main = script(transferable=False)

if __name__ == "__main__":
    main()
