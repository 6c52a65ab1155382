import AspenNodeCommands
import ArgumentParser

@main
struct AspenNodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aspen-node",
        abstract: "Run one Aspen node.",
        subcommands: [NodeCommands.Run.self, NodeCommands.Key.self, NodeCommands.ForgeHook.self],
        defaultSubcommand: NodeCommands.Run.self)
}
