import AspenCore
import Testing

@Suite("Metrics text")
struct MetricsTextTests {
    @Test("a family is its help, its type and its samples; free-text label values are escaped as the format asks")
    func families() {
        var text = MetricsText()
        text.add("aspen_up", .gauge, "Whether it runs.", "1")
        text.add("aspen_runs_total", .counter, "Runs.", label: "hook", [("plain", "3"), ("a \"quoted\" \\ name\nsplit", "4")])
        #expect(
            text.lines == [
                "# HELP aspen_up Whether it runs.", "# TYPE aspen_up gauge", "aspen_up 1",
                "# HELP aspen_runs_total Runs.", "# TYPE aspen_runs_total counter", "aspen_runs_total{hook=\"plain\"} 3",
                "aspen_runs_total{hook=\"a \\\"quoted\\\" \\\\ name\\nsplit\"} 4",
            ])
    }
}
