import AspenCore

/// Where the parser found each job and each `needs` entry, so that an error found in the graph
/// points into the file. A pipeline built in code has none, and its errors no line.
struct GraphLocator {
    var jobs: [String: SourceLocation] = [:]
    var needs: [String: [SourceLocation?]] = [:]

    func job(_ name: String) -> SourceLocation? { jobs[name] }

    func need(_ job: String, _ index: Int) -> SourceLocation? {
        guard let entries = needs[job], entries.indices.contains(index) else { return jobs[job] }
        return entries[index] ?? jobs[job]
    }
}

/// The graph of `needs`: refuses unknown and repeated needs and cycles, expands matrices, and
/// orders the jobs so that each comes after the jobs it needs (ties keep file order, so the
/// same file always gives the same plan).
enum JobGraph {
    static func plan(jobs: [Job], limits: Limits, locator: GraphLocator?) throws(PipelineError) -> [PlannedJob] {
        guard !jobs.isEmpty else { throw PipelineError(.missingKey, "a pipeline needs at least one job") }
        let index = try indexByName(jobs, locator: locator)
        try checkNeeds(jobs, index: index, locator: locator)
        try checkCycles(jobs, index: index, locator: locator)
        let expansions = try expand(jobs, limits: limits, locator: locator)
        var plan: [PlannedJob] = []
        for jobIndex in order(jobs, index: index) {
            let needs = jobs[jobIndex].needs.compactMap { index[$0] }
            for var planned in expansions[jobIndex] {
                planned.needs = needs.flatMap { expansions[$0].map(\.name) }
                plan.append(planned)
            }
        }
        return sortNeeds(plan)
    }

    static func indexByName(_ jobs: [Job], locator: GraphLocator?) throws(PipelineError) -> [String: Int] {
        var index: [String: Int] = [:]
        for (position, job) in jobs.enumerated() {
            guard index.updateValue(position, forKey: job.name) == nil else {
                throw PipelineError(.duplicateKey, "job '\(job.name)' is defined twice", at: locator?.job(job.name))
            }
        }
        return index
    }

    static func checkNeeds(_ jobs: [Job], index: [String: Int], locator: GraphLocator?) throws(PipelineError) {
        for job in jobs {
            var seen = Set<String>()
            for (position, need) in job.needs.enumerated() {
                guard index[need] != nil else {
                    let names = jobs.map(\.name).joined(separator: ", ")
                    throw PipelineError(
                        .unknownNeed, "job '\(job.name)' needs '\(need)', which is not a job (jobs: \(names))", at: locator?.need(job.name, position))
                }
                guard seen.insert(need).inserted else {
                    throw PipelineError(.invalidValue, "job '\(job.name)' needs '\(need)' twice", at: locator?.need(job.name, position))
                }
            }
        }
    }

    /// A depth-first walk along `needs` in file order; meeting a job still on the walk's path
    /// closes a cycle, reported from that job round to itself at the `needs` entry that closed it.
    static func checkCycles(_ jobs: [Job], index: [String: Int], locator: GraphLocator?) throws(PipelineError) {
        enum Visit { case unvisited, onPath, done }
        var marks = [Visit](repeating: .unvisited, count: jobs.count)
        for start in jobs.indices where marks[start] == .unvisited {
            var path: [(job: Int, nextNeed: Int)] = [(start, 0)]
            marks[start] = .onPath
            while let top = path.last {
                let (current, nextNeed) = (top.job, top.nextNeed)
                let needs = jobs[current].needs
                guard nextNeed < needs.count else {
                    marks[current] = .done
                    path.removeLast()
                    continue
                }
                path[path.count - 1].nextNeed += 1
                guard let target = index[needs[nextNeed]] else { continue }
                switch marks[target] {
                case .unvisited:
                    marks[target] = .onPath
                    path.append((target, 0))
                case .onPath:
                    let from = path.firstIndex { $0.job == target } ?? 0
                    let names = path[from...].map { jobs[$0.job].name } + [jobs[target].name]
                    throw PipelineError(
                        .cycle, "needs form a cycle: \(names.joined(separator: " → "))", at: locator?.need(jobs[current].name, nextNeed))
                case .done:
                    break
                }
            }
        }
    }

    /// Each job's expansions: itself, or one job per combination of its matrix's values, the
    /// first axis varying slowest. The count is checked before anything is built.
    static func expand(_ jobs: [Job], limits: Limits, locator: GraphLocator?) throws(PipelineError) -> [[PlannedJob]] {
        let bound = limits.ciJobsPerPipelineMax
        var total = 0
        for job in jobs {
            let count = job.matrix.reduce(1) { product, axis in min(product * max(axis.values.count, 1), bound + 1) }
            total += count
            guard total <= bound else {
                let countText = count > bound ? "more than \(bound)" : "\(count)"
                throw PipelineError(
                    .overLimit, "job '\(job.name)' expands to \(countText) jobs, which brings the pipeline over ciJobsPerPipelineMax (\(bound))",
                    at: locator?.job(job.name))
            }
        }
        return jobs.map(expansions)
    }

    static func expansions(of job: Job) -> [PlannedJob] {
        guard !job.matrix.isEmpty else { return [PlannedJob(name: job.name, jobName: job.name)] }
        var combinations: [[MatrixBinding]] = [[]]
        for axis in job.matrix {
            combinations = combinations.flatMap { combination in
                axis.values.map { combination + [MatrixBinding(axis: axis.name, value: $0)] }
            }
        }
        return combinations.map { PlannedJob(name: expandedName(job.name, $0), jobName: job.name, matrix: $0) }
    }

    /// `test (config=debug, os=linux)`.
    static func expandedName(_ name: String, _ bindings: [MatrixBinding]) -> String {
        "\(name) (\(bindings.map { "\($0.axis)=\($0.value)" }.joined(separator: ", ")))"
    }

    /// Kahn's order, always taking the earliest job in the file among those ready.
    static func order(_ jobs: [Job], index: [String: Int]) -> [Int] {
        var waitingFor = jobs.map(\.needs.count)
        var dependents = [[Int]](repeating: [], count: jobs.count)
        for (position, job) in jobs.enumerated() {
            for need in job.needs { if let target = index[need] { dependents[target].append(position) } }
        }
        var ready = jobs.indices.filter { waitingFor[$0] == 0 }
        var order: [Int] = []
        while !ready.isEmpty {
            let next = ready.removeFirst()
            order.append(next)
            for dependent in dependents[next] {
                waitingFor[dependent] -= 1
                if waitingFor[dependent] == 0 { ready.insert(dependent, at: ready.firstIndex { $0 > dependent } ?? ready.endIndex) }
            }
        }
        return order
    }

    /// Each planned job's needs in plan order.
    static func sortNeeds(_ plan: [PlannedJob]) -> [PlannedJob] {
        var position: [String: Int] = [:]
        for (offset, planned) in plan.enumerated() { position[planned.name] = offset }
        return plan.map { planned in
            var planned = planned
            planned.needs.sort { (position[$0] ?? 0) < (position[$1] ?? 0) }
            return planned
        }
    }
}
